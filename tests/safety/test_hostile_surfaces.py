"""The surfaces added since the first corpus (issue 22, "new surfaces"): run folders read by `leaderboard`,
`report`, `gate` and `score`; gate summaries and flags; peer files for `import`; names from peers on boards
and the terminal; training configs and flags; sweeps. Each hostile input is a clean error naming the problem
(exit status 2, no traceback) or a counted per-sample result, in bounded time and memory, with nothing
written outside the output folder. docs/safety.md lists what each surface guarantees."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from medharness.backends import Backend, Request, backend
from medharness.cli import main
from medharness.core.records import Generation

TASK = "phantom_presence"
ESC = "\x1b"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    assert main(["run", "--model", "baseline:majority", "--tasks", TASK, "--limit", "4", "--output", str(out),
                 "--no-progress"]) == 0
    return out


def listing(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def no_traceback(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    said = capsys.readouterr()
    assert "Traceback" not in said.err and "Traceback" not in said.out, said.err[-2000:]
    return said.out, said.err


# --- run folders: run.json read by leaderboard, report, gate and score (item 7) -----------------------------


def _set(key: str, value: str) -> Callable[[bytes], bytes]:
    def edit(raw: bytes) -> bytes:
        data = json.loads(raw)
        data[key] = value
        return json.dumps(data).encode()  # ASCII: a lone surrogate is written as its \ud800 escape
    return edit


RUN_LOGS: dict[str, tuple[Callable[[bytes], bytes], str | None]] = {
    # case: (how run.json is changed, the error; None: read, the bad character replaced)
    "nested_deep": (lambda raw: b'{"run_id": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                    "run.json:1: JSON nested too deeply to read"),
    "huge_integer": (lambda raw: raw.replace(b'"limit": 4', b'"limit": ' + b"9" * 5000),
                     "run.json:1: cannot read a JSON value"),
    "utf16": (lambda raw: raw.decode().encode("utf-16"), "the run log is encoded as UTF-16"),
    "latin1": (lambda raw: raw.replace(b'"status"', b'"st\xe9tus"'), "the run log is not UTF-8 (byte 0xe9"),
    "model_surrogate": (_set("model", "m\ud800"), None),
    "label_surrogate": (_set("label", "x\ud800"), None),
}


def _command(reader: str, run: Path, base: Path, out: Path) -> list[str]:
    return {"leaderboard": ["leaderboard", str(run)], "report": ["report", str(run), "--output", str(out)],
            "gate": ["gate", "--baseline", str(base), "--candidate", str(run)],
            "score": ["score", str(run)]}[reader]


@pytest.mark.parametrize("reader", ["leaderboard", "report", "gate", "score"])
@pytest.mark.parametrize("case", sorted(RUN_LOGS))
def test_a_hostile_run_log_is_a_clean_error_or_read_with_the_character_replaced(
        tmp_path: Path, base_run: Path, capsys: pytest.CaptureFixture[str], reader: str, case: str) -> None:
    """run.json used to be read with a bare json.loads: nesting and huge integers were tracebacks, and a lone
    surrogate in a peer's model name or a label crashed `report` and `leaderboard` on output."""
    if reader == "report" and case in ("utf16", "latin1", "huge_integer"):
        pytest.skip("the same reader as leaderboard's; report is slow (plots)")
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    edit, error = RUN_LOGS[case]
    (run / "run.json").write_bytes(edit((run / "run.json").read_bytes()))
    before = listing(tmp_path)
    code = main(_command(reader, run, base_run, tmp_path / "report"))
    err = no_traceback(capsys)[1]
    if error is None:
        assert code == 0, err
    else:
        assert code == 2 and error in err, err
        assert listing(tmp_path) == before  # nothing written (not even the report folder's files)


@pytest.mark.parametrize("record", ["[" * 100_000 + "]" * 100_000, '{"pid": ' + "9" * 5000 + "}", "{"])
def test_a_damaged_lock_record_still_refuses_a_second_writer_cleanly(tmp_path: Path, record: str) -> None:
    """The holder's record in run.lock is only read to name it: damaged, the writer is refused unnamed."""
    from medharness.core.errors import RunInUseError
    from medharness.core.records import RunSettings
    from medharness.runs.runlog import LOCK_FILE, RunDir

    run = RunDir.create(tmp_path / "run", RunSettings(model="m", tasks="t"))
    try:
        (tmp_path / "run" / LOCK_FILE).write_text(record)
        with pytest.raises(RunInUseError, match="in use by another medharness process"):
            RunDir.open(tmp_path / "run", writer="judge")
    finally:
        run.close()


# --- names from peers: no ANSI escape or Markdown reaches a board, a report or the terminal (item 8) --------

EVIL = "evil | \x1b[31mred\x1b[0m\n*b* `x`"


def _lm_eval_files(folder: Path, model: str | None, results: bytes | None = None) -> Path:
    """An lm-eval samples file of the first four samples (right answers), and its results file."""
    from medharness.taskfiles.task import load_task

    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"samples_medharness_{TASK}_2026-01-01T00-00-00.jsonl"
    lines = [json.dumps({"doc_id": i, "doc": {"id": s.id, "text": "q"}, "target": s.target,
                         "arguments": {"gen_args_0": {"arg_0": "p"}}, "resps": [[s.target]],
                         "filtered_resps": [s.target], "filter": "none", "metrics": ["yes_no_accuracy"]})
             for i, s in enumerate(load_task(TASK).load_samples()[:4])]
    file.write_text("\n".join(lines) + "\n")
    if results is None and model is not None:
        results = json.dumps({"model_name": model, "lm_eval_version": "0.4"}).encode()
    if results is not None:
        (folder / "results_2026-01-01T00-00-00.json").write_bytes(results)
    return file


def test_a_peer_model_name_with_ansi_and_markdown_is_one_plain_line_everywhere(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = _lm_eval_files(tmp_path / "peer", EVIL)
    run = tmp_path / "run"
    assert main(["import", "--from", "lm-eval", str(file), "--task", TASK, "--output", str(run)]) == 0
    out, err = no_traceback(capsys)
    assert ESC not in out + err
    log = json.loads((run / "run.json").read_text())
    assert log["model"] == "lm-eval==0.4:evil | [31mred[0m *b* `x`"  # recorded plain, on one line
    for fmt in ("md", "csv", "json"):
        assert main(["leaderboard", str(run), "--format", fmt]) == 0
        out, err = no_traceback(capsys)
        assert ESC not in out + err, fmt
    assert main(["report", str(run), "--output", str(tmp_path / "rep")]) == 0
    no_traceback(capsys)
    assert ESC not in (tmp_path / "rep" / "report.md").read_text()


def test_a_hand_edited_model_name_is_shown_plain_by_report_and_csv(
        tmp_path: Path, base_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Displays do not trust run.json either (a run written by hand, or by an older medharness)."""
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    (run / "run.json").write_bytes(_set("model", EVIL)((run / "run.json").read_bytes()))
    assert main(["report", str(run), "--output", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert ESC not in text
    model_line = next(line for line in text.splitlines() if line.startswith("- model:"))
    assert model_line.endswith("(`evil | [31mred[0m *b* 'x'`)")  # one line, the code span not broken
    assert main(["leaderboard", str(run), "--format", "csv"]) == 0
    assert ESC not in no_traceback(capsys)[0]


MARKDOWN_NAMES = ["**x**", "[click](http://evil)", "<img src=x>", "_y_ `z` ~~s~~ &amp; $m$ \\*"]


def test_markdown_in_a_peer_name_or_label_renders_as_typed_on_boards_and_reports(
        tmp_path: Path, base_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only `|` was escaped: a peer's model name `**x**` showed bold, `[click](http://evil)` a link and
    `<img src=x>` an image on `leaderboard --format md`, report.md and a sweep's boards (their renderer)."""
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])  # raw HTML passes through
    name = " ".join(MARKDOWN_NAMES)
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    for key in ("model", "label"):
        (run / "run.json").write_bytes(_set(key, name)((run / "run.json").read_bytes()))
    assert main(["leaderboard", str(run), "--format", "md"]) == 0
    board = no_traceback(capsys)[0]
    assert main(["report", str(run), "--output", str(tmp_path / "rep")]) == 0
    no_traceback(capsys)
    report = (tmp_path / "rep" / "report.md").read_text()
    for text in (board, report):
        html = md.render(text)
        for tag in ("<strong>x", "<em>y", '<a href="http://evil"', "<img src=x", '<img src="x"', "<s>s",
                    "<code>z"):  # the report's own bold sample ids and plots are as before
            assert tag not in html, (tag, text)
        shown = html.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        for typed in MARKDOWN_NAMES:
            assert typed in shown, (typed, html)


# --- gate: summaries and flags (items 3 and 7) --------------------------------------------------------------


@pytest.fixture(scope="module")
def summary(base_run: Path) -> str:
    out = base_run.parent / "summary.json"
    assert main(["gate", "--write-summary", str(base_run), "-o", str(out)]) == 0
    return out.read_text()


def _flip_direction(text: str) -> str:
    data = json.loads(text)
    for task in data["tasks"].values():
        for info in task["metrics"].values():
            info["higher_is_better"] = not info["higher_is_better"]
    return json.dumps(data)


GATE_FILES: dict[str, tuple[Callable[[str], bytes], str]] = {
    "nested_deep": (lambda s: (s[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
                    "JSON nested too deeply to read"),
    "huge_integer": (lambda s: s.replace('"version": 1', '"version": ' + "9" * 5000).encode(),
                     "cannot read a JSON value"),
    "utf16": (lambda s: s.encode("utf-16"), "the gate summary is encoded as UTF-16"),
    "latin1": (lambda s: s.replace('"source": "', '"source": "\xe9').encode("latin-1"),
               "the gate summary is not UTF-8"),
    "no_task": (lambda s: json.dumps({**json.loads(s), "tasks": {}}).encode(), "no task: nothing to gate"),
    "infinity": (lambda s: re.sub(r'"(yes_no_accuracy)": 1.0', r'"\1": Infinity', s, count=1).encode(),
                 "not a gate summary"),
    "direction_flipped": (lambda s: _flip_direction(s).encode(), "disagree on its direction"),
}


@pytest.mark.parametrize("case", sorted(GATE_FILES))
def test_a_hostile_gate_summary_is_refused_with_exit_2(tmp_path: Path, summary: str, case: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(summary)
    edit, error = GATE_FILES[case]
    bad.write_bytes(edit(summary))
    assert bad.read_bytes() != good.read_bytes()
    for base, cand in ((bad, good), (good, bad)):
        code = main(["gate", "--baseline", str(base), "--candidate", str(cand)])
        out, err = no_traceback(capsys)
        assert code == 2 and error in out + err, out + err


def test_a_direction_flipped_on_both_sides_is_the_registrations_not_the_files(
        tmp_path: Path, summary: str, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "flipped.json"
    file.write_text(_flip_direction(summary))
    assert main(["gate", "--baseline", str(file), "--candidate", str(file)]) == 2
    assert "yes_no_accuracy is registered with True" in no_traceback(capsys)[0]


def test_a_lone_surrogate_in_a_gate_summary_is_one_replaced_character(
        tmp_path: Path, summary: str, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "s.json"
    file.write_text(json.dumps({**json.loads(summary), "model": "m\ud800"}))
    assert main(["gate", "--baseline", str(file), "--candidate", str(file)]) == 0
    no_traceback(capsys)


@pytest.mark.parametrize("flag", [["--max-drop", "nan"], ["--max-drop", "inf"], ["--max-drop", "-1"],
                                  ["--alpha", "nan"], ["--alpha", "0"], ["--alpha", "1.5"]])
def test_gate_flags_that_are_no_tolerance_are_refused(tmp_path: Path, summary: str, flag: list[str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "s.json"
    file.write_text(summary)
    assert main(["gate", "--baseline", str(file), "--candidate", str(file), *flag]) == 2
    assert "need a finite --max-drop >= 0 and 0 < --alpha < 1" in no_traceback(capsys)[1]


# --- special files: a FIFO or a device is named, never opened (item 4) --------------------------------------


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        fifo = tmp_path / "special.jsonl"
        os.mkfifo(fifo)  # nobody writes to it: opening it would block forever
        return fifo
    return Path("/dev/zero")  # reading it would fill memory


SPECIAL_USES: dict[str, Callable[[Path, Path, Path], list[str]]] = {
    "import_file": lambda f, out, peer: ["import", "--from", "lm-eval", str(f), "--task", TASK,
                                         "--output", str(out)],
    "import_xlsx": lambda f, out, peer: ["import", "--from", "vlmevalkit", str(f), "--task", TASK,
                                         "--output", str(out), "--id-map", str(peer)],
    "import_id_map": lambda f, out, peer: ["import", "--from", "lmms-eval", str(peer), "--task", TASK,
                                           "--output", str(out), "--id-map", str(f)],
    "score_predictions": lambda f, out, peer: ["score", "--predictions", str(f), "--task", TASK],
    "run_replay": lambda f, out, peer: ["run", "--model", str(f), "--backend", "replay", "--tasks", TASK,
                                        "--output", str(out), "--no-progress"],
    "run_samples": lambda f, out, peer: ["run", "--model", "baseline:majority", "--tasks", TASK,
                                         "--samples", str(f), "--output", str(out), "--no-progress"],
    "board_spec": lambda f, out, peer: ["leaderboard", "--board", str(f), "--output", str(out)],
    "judge_config": lambda f, out, peer: ["judge", str(out), "--judge-config", str(f)],
    "train_config": lambda f, out, peer: ["train", "--task", TASK, "--recipe", "sft", "--model", "m",
                                          "--config", str(f), "--output", str(out)],
    "sweep_file": lambda f, out, peer: ["train-then-eval", "--sweep", str(f), "--output", str(out)],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
@pytest.mark.parametrize("use", sorted(SPECIAL_USES))
def test_a_fifo_or_a_device_is_refused_by_name(
        tmp_path: Path, base_run: Path, capsys: pytest.CaptureFixture[str], kind: str, use: str) -> None:
    """Where a file is named (data, YAML, a peer's): a FIFO, which would block the reader forever, and
    /dev/zero, which would fill memory, are named and refused before they are opened; nothing is written."""
    special = _special(tmp_path, kind)
    if not special.exists():
        pytest.skip("no /dev/zero here")
    if use.startswith(("train", "sweep")):
        pytest.importorskip("trl", reason="training needs the `train` extra")
    peer = _lm_eval_files(tmp_path / "peer", "m")
    out = tmp_path / "out"
    if use == "judge_config":  # judge writes into a finished run
        shutil.copytree(base_run, out)
    before = listing(tmp_path)
    assert main(SPECIAL_USES[use](special, out, peer)) == 2
    err = no_traceback(capsys)[1]
    assert f"{special}: not a regular file (a pipe, socket or device)" in err, err
    assert listing(tmp_path) == before


def test_a_gate_side_that_is_a_fifo_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = _special(tmp_path, "fifo")
    assert main(["gate", "--baseline", str(fifo), "--candidate", str(fifo)]) == 2
    assert "neither a run directory nor a gate summary file" in no_traceback(capsys)[1]


def test_an_xlsx_bomb_is_refused_by_import_at_the_default_limit(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A sheet that inflates past MAX_ZIP_MEMBER (256 MB; a 7 MB file of 2 GB grew memory without bound) is
    refused from the zip's directory, in bounded memory: nothing is inflated."""
    from medharness.bridges.peerfiles import MAX_ZIP_MEMBER

    bomb = tmp_path / "MyVLM_medharness_phantom_presence.xlsx"
    chunk = b"0" * 2**20
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
        for _ in range(MAX_ZIP_MEMBER // len(chunk) + 1):
            member.write(chunk)
    assert bomb.stat().st_size < 2**20
    ids = tmp_path / "ids.tsv"
    ids.write_text("index\tid\n0\tx\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["import", "--from", "vlmevalkit", str(bomb), "--task", TASK, "--id-map", str(ids),
                 "--output", str(tmp_path / "run")]) == 2
    assert "inflates to 269,484,032 bytes" in no_traceback(capsys)[1]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB
    assert not (tmp_path / "run").exists()


# --- import: the results file beside a peer's samples (item 7) ----------------------------------------------

RESULTS: dict[str, tuple[bytes, str]] = {
    "nested_deep": (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply to read"),
    "huge_integer": (b'{"model_name": "m", "lm_eval_version": ' + b"9" * 5000 + b"}",
                     "cannot read a JSON value"),
    "utf16": (json.dumps({"model_name": "m"}).encode("utf-16"), "the results file is encoded as UTF-16"),
    "latin1": (b'{"model_name": "m\xe9"}', "the results file is not UTF-8"),
    "not_an_object": (b"[1, 2]", "not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(RESULTS))
def test_an_unreadable_results_file_is_named_not_taken_for_a_missing_one(
        tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw, error = RESULTS[case]
    file = _lm_eval_files(tmp_path / "peer", None, raw)
    out = tmp_path / "run"
    assert main(["import", "--from", "lm-eval", str(file), "--task", TASK, "--output", str(out)]) == 2
    err = no_traceback(capsys)[1]
    assert f"does not name its model ({tmp_path / 'peer' / 'results_2026-01-01T00-00-00.json'}" in err, err
    assert error in err and "pass --model-name" in err
    assert not out.exists()
    assert main(["import", "--from", "lm-eval", str(file), "--task", TASK, "--output", str(out),
                 "--model-name", "m"]) == 0  # the name given: the results file is not needed


PEER_FILES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    # the samples file (or, for lmms-eval, the --id-map docs file): how it is changed, the error
    "nested_deep": (lambda raw: b'{"doc_id": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n" + raw,
                    ":1: JSON nested too deeply to read"),
    "huge_integer": (lambda raw: b'{"doc_id": ' + b"9" * 5000 + b"}\n" + raw, ":1: cannot read a JSON value"),
    "utf16": (lambda raw: raw.decode().encode("utf-16"), "is encoded as UTF-16 (little-endian)"),
    "latin1": (lambda raw: b'{"x": "\xe9"}\n' + raw, ":1: the samples file is not UTF-8 (byte 0xe9"),
}


@pytest.mark.parametrize("tool", ["lm-eval", "lmms-eval"])
@pytest.mark.parametrize("case", sorted(PEER_FILES))
def test_a_hostile_peer_file_or_id_map_is_refused_by_line_before_any_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, tool: str) -> None:
    from medharness.bridges.export import export_task

    edit, error = PEER_FILES[case]
    file = _lm_eval_files(tmp_path / "peer", "m")
    extra: list[str] = []
    if tool == "lmms-eval":  # the damaged file is the exported docs file the id map reads
        export_task("lmms-eval", TASK, tmp_path / "export", limit=4)
        file = tmp_path / "peer" / f"20260101_000000_samples_medharness_{TASK}.jsonl"
        file.write_text("".join(json.dumps({"doc_id": i, "target": "yes", "filtered_resps": "yes"}) + "\n"
                                for i in range(4)))
        docs = tmp_path / "export" / "docs.jsonl"
        docs.write_bytes(edit(docs.read_bytes()).replace(b'"doc_id"', b'"id"'))
        extra = ["--id-map", str(docs), "--model-name", "m"]
    else:
        file.write_bytes(edit(file.read_bytes()))
    out = tmp_path / "run"
    assert main(["import", "--from", tool, str(file), "--task", TASK, "--output", str(out), *extra]) == 2
    err = no_traceback(capsys)[1]
    assert error in err, err
    assert not out.exists()


def test_a_lone_surrogate_in_a_peer_model_name_or_a_replayed_answer_is_one_replaced_character(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each crashed a command after its run folder existed (left "running", no rows): `import` with the
    name in the results file, `run` on a replay file; `leaderboard` and `report` then read them."""
    file = _lm_eval_files(tmp_path / "peer", "m\ud800")
    imported = tmp_path / "imported"
    assert main(["import", "--from", "lm-eval", str(file), "--task", TASK, "--output", str(imported)]) == 0
    assert json.loads((imported / "run.json").read_text())["model"] == "lm-eval==0.4:m\ufffd"
    rows = [json.loads(line) for line in file.read_text().splitlines()]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": r["doc"]["id"], "prediction": r["target"] + " \ud800"}) + "\n"
                             for r in rows))
    assert "\\ud800" in preds.read_text()
    replayed = tmp_path / "replayed"
    assert main(["run", "--model", str(preds), "--backend", "replay", "--tasks", TASK, "--limit", "4",
                 "--output", str(replayed), "--no-progress"]) == 0
    log = json.loads((replayed / "run.json").read_text())
    assert log["status"] == "finished"
    texts = [json.loads(line)["generation"]["text"]
             for line in (replayed / "samples" / f"{TASK}.jsonl").read_text().splitlines()]
    assert len(texts) == 4 and all(t.endswith(" \ufffd") for t in texts)
    assert main(["leaderboard", str(imported), str(replayed)]) == 0
    assert main(["report", str(imported), "--output", str(tmp_path / "rep")]) == 0
    no_traceback(capsys)


@backend("lone_surrogate_probe")
class SurrogateBackend(Backend):
    """A server whose JSON answer holds a `"\\ud800"` escape: the text arrives with a lone surrogate."""

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        return [Generation(sample_id=r.prompt.sample_id, text="yes \ud800", model=self.fingerprint,
                           error=None) for r in requests]


def test_a_lone_surrogate_from_a_backend_is_one_replaced_character_and_the_run_finishes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No UTF-8 file can hold it: writing the row (and the response cache) failed and the run stopped."""
    out = tmp_path / "run"
    for _ in range(2):  # the second time from the response cache
        shutil.rmtree(out, ignore_errors=True)
        assert main(["run", "--model", "m", "--backend", "lone_surrogate_probe", "--tasks", TASK,
                     "--limit", "3", "--output", str(out), "--cache-dir", str(tmp_path / "cache"),
                     "--no-progress"]) == 0
        no_traceback(capsys)
        texts = [json.loads(line)["generation"]["text"]
                 for line in (out / "samples" / f"{TASK}.jsonl").read_text().splitlines()]
        assert texts == ["yes \ufffd"] * 3


TRAIN_LOG_LINES = {
    "nested_deep": ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply to read"),
    "huge_integer": ('{"step": ' + "9" * 5000 + "}", "cannot read a JSON value"),
    "not_a_row": ('{"loss": 1.0}', "not a LogRow record: Field required"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_LOG_LINES))
def test_a_hostile_training_log_line_is_an_error_by_line_and_a_torn_last_line_is_left_out(
        tmp_path: Path, case: str) -> None:
    """`leaderboard --plot` reads a training run's logs.jsonl (reward curves): a line nested thousands deep
    or with a huge integer was a traceback; a line that is no row is named, not skipped in silence."""
    from medharness.core.errors import DataError
    from medharness.runs.folders import TrainDir

    line, error = TRAIN_LOG_LINES[case]
    logs = tmp_path / "logs.jsonl"
    logs.write_text('{"step": 1, "reward": 0.5}\n' + line + '\n{"step": 2, "reward": 0.7}\n{"step": 3, "rew')
    with pytest.raises(DataError, match=re.escape(f"{logs}:2: ") + ".*" + re.escape(error)):
        TrainDir(tmp_path).log_rows()
    logs.write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "reward": 0.7}\n' + line)  # torn: no newline
    assert [r.step for r in TrainDir(tmp_path).log_rows()] == [1, 2]


RESUMED_LOG_LINES = {
    "nested_deep": (("[" * 100_000 + "]" * 100_000).encode(), "JSON nested too deeply to read"),
    "huge_integer": (b'{"step": ' + b"9" * 5000 + b"}", "cannot read a JSON value"),
    "not_a_row": (b"[1, 2]", "not a log row"),
    "step_text": (b'{"step": "3"}', "not a log row"),
    "latin1": (b'{"step": 2, "n\xe9": 1}', "is not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(RESUMED_LOG_LINES))
def test_a_hostile_log_line_stops_a_resume_by_line_and_a_torn_last_line_goes(tmp_path: Path,
                                                                            case: str) -> None:
    """`train --resume` drops the log rows past its checkpoint: it read with a bare json.loads (a traceback on
    nesting, huge integers and bad UTF-8), and a line it could not read was dropped in silence."""
    from medharness.core.errors import DataError
    from medharness.trainers.run import drop_rows_after

    line, error = RESUMED_LOG_LINES[case]
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b'{"step": 1}\n' + line + b'\n{"step": 2}\n{"step": 3}\n')
    with pytest.raises(DataError, match=re.escape(f"{logs}:2: ") + ".*" + re.escape(error)):
        drop_rows_after(logs, 2)
    assert b"step" in logs.read_bytes()  # left as it was
    if case != "latin1":
        logs.write_bytes(b'{"step": 1}\n{"step": 2}\n{"step": 3}\n' + line)  # torn: no newline
        drop_rows_after(logs, 2)
        assert logs.read_text() == '{"step": 1}\n{"step": 2}\n'


# --- training configs and flags: refused before any folder or model (items 5 and 6) -------------------------

TRAIN_CASES: dict[str, tuple[list[str], str]] = {
    "recipe_switched_by_C": (["--preset", "grpo", "-C", "recipe=sft"], "sft (-C recipe=sft): name one"),
    "trl_a_list": (["--preset", "grpo", "--config", "{trl_list}", "--max-steps", "3"],
                   "trl is a mapping of settings, got list"),
    "reward_weight_nan": (["--preset", "grpo", "-C", "rewards=[{metric: yes_no_accuracy, weight: .nan}]"],
                          "rewards.0.weight: Input should be a finite number"),
    "max_steps_0": (["--preset", "grpo", "--max-steps", "0"], "--max-steps: trl.max_steps = 0"),
    "max_steps_negative": (["--preset", "sft", "--max-steps", "-5"], "an integer >= 1, or -1"),
    "seed_negative": (["--preset", "grpo", "-C", "seed=-1"], "seed: Input should be greater than or equal"),
    "seed_2_32": (["--preset", "grpo", "-C", "seed=4294967296"], "seed: Input should be less than or equal"),
    "lr_nan": (["--preset", "grpo", "-C", "trl.learning_rate=.nan"], "must be a finite number > 0"),
    "lr_inf": (["--preset", "sft", "-C", "trl.learning_rate=.inf"], "must be a finite number > 0"),
    "lr_negative": (["--preset", "dpo", "-C", "trl.learning_rate=-1e-5"], "must be a finite number > 0"),
    "lr_text": (["--preset", "grpo", "-C", "trl.learning_rate=fast"], "'fast': must be a finite number > 0"),
    "temperature_nan": (["--preset", "grpo", "-C", "trl.temperature=.nan"], "must be a finite number > 0"),
    "temperature_0": (["--preset", "grpo", "-C", "trl.temperature=0"], "must be a finite number > 0"),
    "batch_0": (["--preset", "sft", "-C", "trl.per_device_train_batch_size=0"], "must be an integer >= 1"),
    "accumulation_0": (["--preset", "grpo", "-C", "trl.gradient_accumulation_steps=0"],
                       "must be an integer >= 1"),
    "num_generations_0": (["--preset", "grpo", "-C", "trl.num_generations=0"], "must be an integer >= 2"),
    "completion_length_0": (["--preset", "grpo", "-C", "trl.max_completion_length=0"],
                            "must be an integer >= 1"),
    "logging_steps_inf": (["--preset", "grpo", "-C", "trl.logging_steps=.inf"],
                          "must be a finite number > 0"),
    "lora_targets_empty": (["--preset", "grpo_lora", "-C", "lora.target_modules=[]"],
                           "lora.target_modules: List should have at least 1 item"),
    "push_to_hub": (["--preset", "grpo", "-C", "trl.push_to_hub=true"], "medharness never uploads"),
    "rewards_empty": (["--preset", "grpo", "-C", "rewards=[]"],  # was the default rewards, in silence
                      "-C rewards=[]: rewards: List should have at least 1 item"),
}

REWARD_FLAGS = {  # `reward --rewards`: an empty list was the default rewards; NaN was pydantic's raw text
    "empty": ("[]", "--rewards []: an empty reward list"),
    "empty_mapping": ("{rewards: []}", "--rewards {rewards: []}: an empty reward list"),
    "weight_nan": ("[{metric: yes_no_accuracy, weight: .nan}]",
                   "rewards.0.weight (yes_no_accuracy): Input should be a finite number, got nan"),
    "weight_inf": ("[format_compliance, {metric: yes_no_accuracy, weight: .inf}]",
                   "rewards.1.weight (yes_no_accuracy): Input should be a finite number, got inf"),
}


@pytest.mark.parametrize("case", sorted(REWARD_FLAGS))
def test_an_empty_or_non_finite_reward_list_is_refused_on_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    from medharness.taskfiles.task import load_task

    spec, error = REWARD_FLAGS[case]
    completions = tmp_path / "c.jsonl"
    sid = load_task(TASK).load_samples("test")[0].id
    completions.write_text(json.dumps({"sample_id": sid, "text": "yes"}) + "\n")
    assert main(["reward", "--task", TASK, "--rewards", spec, "--completions", str(completions)]) == 2
    out, err = no_traceback(capsys)
    assert f"medharness reward: error: --rewards {spec}: " in err and error in err, err
    assert len(err.strip().splitlines()) == 1 and not out, err


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "train"])
@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_a_hostile_training_config_is_refused_before_any_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, dry_run: bool) -> None:
    """Each used to pass (the dry run said "ready") and fail as a traceback after the output folder existed,
    or train something else than asked; the model named does not exist, so nothing may load it."""
    pytest.importorskip("trl", reason="training needs the `train` extra")
    (tmp_path / "trl_list.yaml").write_text("trl: [1, 2]\n")
    args, error = TRAIN_CASES[case]
    args = [a.replace("{trl_list}", str(tmp_path / "trl_list.yaml")) for a in args]
    out = tmp_path / "out"
    before = listing(tmp_path)
    assert main(["train", "--task", TASK, "--model", str(tmp_path / "no-model"), *args, "--output", str(out),
                 *(["--dry-run"] if dry_run else [])]) == 2
    err = no_traceback(capsys)[1]
    assert error in err, err
    assert listing(tmp_path) == before


def test_credentials_in_a_trl_url_are_given_to_trl_and_recorded_nowhere(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-C trl.vllm_server_base_url=http://user:KEY@host` was written as given to train.json, each
    checkpoint's medharness.json and the dry run (item 8: a URL's credentials are redacted wherever it is
    recorded)."""
    pytest.importorskip("trl", reason="training needs the `train` extra")
    from medharness.trainers.checkpoints import Lineage, model_card, write_manifest
    from medharness.trainers.cli import parse_train_args, train_request
    from medharness.trainers.config import trl_args
    from medharness.trainers.run import resolve

    url, key = "http://user:SECRETKEY123@host:8000", "SECRETKEY123"
    out = tmp_path / "out"
    args = ["train", "--task", TASK, "--preset", "grpo", "--model", "no-such/model", "--output", str(out),
            "-C", f"trl.vllm_server_base_url={url}"]
    for shown in (["--json"], []):
        assert main([*args, "--dry-run", *shown]) == 0
        text = no_traceback(capsys)[0]
        assert key not in text and "http://***@host:8000" in text, shown
    config, layers = resolve(train_request(parse_train_args(args)))
    trl = trl_args(config, layers, out, False)
    assert trl.vllm_server_base_url == url  # TRL is given the real one
    lineage = Lineage.create(config, layers.presets, trl, ["a", "b"], "default")
    # train.json's `config` is lineage.resolved(), as each manifest's is
    assert lineage.resolved()["trl"]["vllm_server_base_url"] == "http://***@host:8000"
    manifest = write_manifest(tmp_path, lineage.manifest(1))
    for recorded in (manifest.read_text(), model_card(lineage.manifest(1), out)):
        assert key not in recorded


def test_trl_s_pickled_settings_are_rewritten_without_credentials(tmp_path: Path) -> None:
    """transformers pickles the trainer's whole config into each checkpoint's and final/'s
    `training_args.bin`: the real URL, key included. It is rewritten scrubbed (TRL keeps the real one in
    memory); a config without credentials leaves the file as TRL wrote it."""
    pytest.importorskip("trl", reason="training needs the `train` extra")
    import torch

    from medharness.trainers.checkpoints import TRAINING_ARGS_FILE, scrub_training_args
    from medharness.trainers.cli import parse_train_args, train_request
    from medharness.trainers.config import trl_args
    from medharness.trainers.run import resolve

    url, key = "http://user:SECRETKEY123@host:8000", "SECRETKEY123"
    for given, rewritten in ((url, True), ("http://host:8000", False)):
        out = tmp_path / ("with" if rewritten else "without")
        config, layers = resolve(train_request(parse_train_args(
            ["train", "--task", TASK, "--preset", "grpo", "--model", "no-such/model", "--output", str(out),
             "-C", f"trl.vllm_server_base_url={given}"])))
        trl = trl_args(config, layers, out, False)
        out.mkdir()
        torch.save(trl, out / TRAINING_ARGS_FILE)  # as transformers' Trainer._save does
        before = (out / TRAINING_ARGS_FILE).read_bytes()
        assert (key.encode() in before) == rewritten
        assert scrub_training_args(out, trl) is rewritten
        after = (out / TRAINING_ARGS_FILE).read_bytes()
        assert key.encode() not in after and (after == before) is not rewritten
        loaded = torch.load(out / TRAINING_ARGS_FILE, weights_only=False)
        assert loaded.vllm_server_base_url == given.replace("user:SECRETKEY123", "***")
        assert loaded.learning_rate == trl.learning_rate and loaded.output_dir == trl.output_dir
        assert trl.vllm_server_base_url == given  # the trainer's own settings are not touched


def test_a_training_error_quoting_a_credential_is_recorded_scrubbed(
        tmp_path: Path, tiny_models: dict[str, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """train.json's `error` is the exception's text, which may quote the setting that failed (a server URL
    with its key): it was written as raised."""
    pytest.importorskip("trl", reason="training needs the `train` extra")
    from medharness.core.errors import ConfigError
    from medharness.trainers import run as train_run

    url, key = "http://user:SECRETKEY123@host:8000", "SECRETKEY123"

    def unreachable(*_: object) -> None:  # fault injection: the server named by the URL does not answer
        raise ConfigError(f"the vLLM server at {url} does not answer")

    monkeypatch.setattr(train_run, "_train", unreachable)
    out = tmp_path / "out"
    assert main(["train", "--task", TASK, "--preset", "grpo", "--preset", "tiny_cpu", "--model",
                 str(tiny_models["qwen2_vl"]), "--output", str(out), "-C", f"trl.vllm_server_base_url={url}",
                 "--max-steps", "1"]) == 2
    record = json.loads((out / "train.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == "ConfigError: the vLLM server at http://***@host:8000 does not answer"
    assert not [f for f in out.rglob("*") if f.is_file() and key.encode() in f.read_bytes()]
    capsys.readouterr()


@pytest.mark.slow
def test_no_file_of_a_training_or_a_failed_sweep_holds_a_url_s_key(
        tmp_path: Path, tiny_models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """End to end: a real GRPO step with a checkpoint, and a sweep whose training stage fails (TRL asked to
    use a vLLM server that is not installed), both given `trl.vllm_server_base_url` with a key: every file
    under the output folders is read for the key (train.json, logs, each checkpoint's medharness.json and
    training_args.bin, final/, the stage logs, sweep.json and the board)."""
    pytest.importorskip("trl", reason="training needs the `train` extra")
    url, key = "http://user:SECRETKEY123@host:8000", b"SECRETKEY123"
    out = tmp_path / "train"
    assert main(["train", "--task", TASK, "--preset", "grpo", "--preset", "tiny_cpu", "--model",
                 str(tiny_models["qwen2_vl"]), "--output", str(out), "--max-steps", "1",
                 "-C", "trl.save_steps=1", "-C", f"trl.vllm_server_base_url={url}"]) == 0
    written = [f for f in out.rglob("*") if f.is_file()]
    assert {"training_args.bin"} <= {f.name for f in written} and len(
        [f for f in written if f.name == "training_args.bin"]) == 2  # checkpoint-1/ and final/
    assert not [f for f in written if key in f.read_bytes()]
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"model: {tiny_models['qwen2_vl']}\ntasks: [{TASK}]\nseeds: [0]\n"
                     "recipes: [{recipe: grpo, overrides: [trl.max_steps=1, trl.use_vllm=true, "
                     f"'trl.vllm_server_base_url={url}']}}]\ncommon_presets: [tiny_cpu]\n"
                     "eval: {backend: hf, limit: 4}\n")
    assert main(["train-then-eval", "--sweep", str(sweep), "--output", str(tmp_path / "sweep")]) == 1
    assert "exited with" in capsys.readouterr().err
    written = [f for f in (tmp_path / "sweep").rglob("*") if f.is_file()]
    assert any(f.name == "sweep.json" for f in written)
    assert not [f for f in written if key in f.read_bytes()]


def test_lora_targets_matching_no_module_are_refused_before_the_output_folder(
        tmp_path: Path, tiny_models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """peft raised NoMatchingPeftModuleError inside the trainer, after train.json was written."""
    pytest.importorskip("trl", reason="training needs the `train` extra")
    out = tmp_path / "out"
    assert main(["train", "--task", TASK, "--model", str(tiny_models["qwen2_vl"]), "--preset", "grpo_lora",
                 "-C", "lora.target_modules=[q_prj]", "--output", str(out)]) == 2
    err = no_traceback(capsys)[1]
    assert "lora.target_modules ['q_prj'] match no module of the model outside its vision tower" in err, err
    assert "q_proj" in err  # the model's own module names, to choose from
    assert not out.exists()


# --- sweeps: sizes bounded before work (item 4) -------------------------------------------------------------


def test_a_sweep_of_a_million_cells_is_refused_by_the_dry_run_in_bounded_memory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"model: m\ntasks: [{TASK}]\nrecipes: [sft]\nshots: {list(range(1, 1001))}\n"
                     f"seeds: {list(range(1000))}\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for dry in (["--dry-run"], []):
        assert main(["train-then-eval", "--sweep", str(sweep), "--output", str(tmp_path / "out"), *dry]) == 2
        assert "the grid has 1,000,000 cells" in no_traceback(capsys)[1]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: no cell was built
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("axis", "error"), [
    ("seeds: [0, -1]", "seeds.1: Input should be greater than or equal to 0"),
    ("seeds: [4294967296]", "seeds.0: Input should be less than or equal to 4294967295"),
    ("split_seed: -1", "split_seed: Input should be greater than or equal to 0"),
])
def test_a_sweep_seed_outside_0_to_2_32_is_refused_by_the_dry_run(tmp_path: Path, axis: str, error: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The dry run checks one cell per recipe entry, so a bad seed on the axis said "ready" and failed per
    cell in the real run; the sweep file takes seeds as `train --seed` does."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"model: m\ntasks: [{TASK}]\nrecipes: [sft]\n{axis}\n")
    out = tmp_path / "out"
    assert main(["train-then-eval", "--sweep", str(sweep), "--output", str(out), "--dry-run"]) == 2
    assert f"{sweep}:4: {error}" in no_traceback(capsys)[1]
    assert not out.exists()
