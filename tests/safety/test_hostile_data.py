"""Hostile data, predictions and run directories (issue 13, items 5, 7, 8, 10, 11, 12): each bad file is
refused with its name, line and what is wrong, or recorded as a counted per-sample failure; never a traceback
(the CLI is called in-process: any exception but a handled one fails the test), never a file outside the run
directory. docs/safety.md describes each mechanism; the corpus is tests/data/fuzz/{data,predictions}/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import RunSettings
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.runlog import LOCK_FILE, RUN_FILE, RunDir

FUZZ = Path(__file__).resolve().parents[1] / "data" / "fuzz"
BASE_TASK = FUZZ / "valid" / "fuzz_base.yaml"

LOCAL_TASK = """\
name: hostile
version: "1"
description: a local task over one hostile data file
card: {{licence: CC0-1.0, citation: none}}
sources: [{{kind: local, path: "{{split}}.{ext}"}}]
columns: {{id: qid, image: image}}
prompts: {{default: plain, variants: {{plain: {{user: "{{question}}"}}}}}}
"""

# data file -> what its error must say (the file's own name and line are checked as well)
DATA_CASES = {
    "null_gold.jsonl": ":3: column 'answer' is empty (null); a sample needs it",
    "null_question.jsonl": ":2: column 'question' is empty (null)",
    "null_id.jsonl": ":4: column 'qid' is empty (null)",
    "null_image.jsonl": ":2: column 'image' is empty (null)",
    "object_id.jsonl": ":2: column 'qid' holds dict {\"a\": 1}, not text",
    "missing_column.jsonl": ":3: no column 'answer'",
    "bad_json_line7.jsonl": ":7: not valid JSON (Expecting ',' delimiter",
    "numbers.jsonl": ":1: expected a record (an object of fields), got int 1",
    "numbers.json": ": record 1: expected a record (an object of fields), got int 1",
    "scalar.json": ": expected a JSON list of records (or an object holding one), got int 42",
    "deep.json": ":1: JSON nested too deeply to read",
    "latin1.jsonl": ":2: the data file is not UTF-8 (byte 0xe9",
    "utf16.jsonl": ": the data file is encoded as UTF-16 (little-endian); save it as UTF-8",
    "nul.jsonl": ":3: the data file holds a NUL byte",
    "short_row.csv": ":3: 2 field(s), expected 4 (qid, question, answer, image)",
    "long_row.csv": ":3: 5 field(s), expected 4",
    "blank_gold.csv": ":3: column 'answer' is empty (\"\")",
    "unclosed_quote.csv": ":3: not valid CSV: a quoted field opened here is never closed",
    "latin1.csv": ":2: the data file is not UTF-8 (byte 0xe9",
}


def test_the_data_corpus_is_complete() -> None:
    assert sorted(p.name for p in (FUZZ / "data").iterdir()) == sorted(DATA_CASES)


def listing(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_a_hostile_data_file_is_refused_by_file_and_line_before_any_directory(
        tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    ext = name.rsplit(".", 1)[1]
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(FUZZ / "data" / name, data / f"test.{ext}")
    task = tmp_path / "hostile.yaml"
    task.write_text(LOCAL_TASK.format(ext=ext))
    before = listing(tmp_path)
    out = tmp_path / "run"
    assert main(["run", "--model", "baseline:constant:yes", "--tasks", str(task), "--data-dir", str(data),
                 "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{data / f'test.{ext}'}{DATA_CASES[name]}" in err, err
    assert "Traceback" not in err and "None" not in err.replace("(null)", "")
    assert listing(tmp_path) == before  # no run directory, nothing anywhere else


def test_a_good_row_of_each_format_still_loads(tmp_path: Path) -> None:
    """The same reader accepts what it should: quoted CSV fields across lines, a BOM, numbers as ids."""
    from medharness.taskfiles.task import load_task

    data = tmp_path / "data"
    data.mkdir()
    (data / "test.csv").write_text('\ufeffqid,question,answer,image\n1,"two\nlines, and a comma",yes,a.png\n')
    (tmp_path / "t.yaml").write_text(LOCAL_TASK.format(ext="csv"))
    [sample] = load_task(tmp_path / "t.yaml", {"data_dir": str(data)}).load_samples()
    assert (sample.id, sample.question, sample.target, sample.images) == ("1", "two\nlines, and a comma",
                                                                          "yes", ("a.png",))
    (data / "test.jsonl").write_text('{"qid": 7, "question": "q", "answer": 3, "image": "b.png"}\n')
    (tmp_path / "j.yaml").write_text(LOCAL_TASK.format(ext="jsonl"))
    [sample] = load_task(tmp_path / "j.yaml", {"data_dir": str(data)}).load_samples()
    assert (sample.id, sample.target) == ("7", 3)


# --- predictions files --------------------------------------------------------------------------------------

PREDICTION_CASES = {
    "bad_json_line3.jsonl": ":3: not valid JSON",
    "duplicate_id.jsonl": ":3: duplicate prediction id 'count-00000'",
    "null_id.jsonl": ":2: field 'id' is null, not a sample id",
    "numbers.json": ": record 1: expected a record (an object of fields), got int 1",
    "numbers.jsonl": ":1: expected a record (an object of fields), got int 1",
    "null.json": ": expected a JSON list of records (or an object holding one), got null",
    "unclosed_quote.csv": ":3: not valid CSV: a quoted field opened here is never closed",
    "short_row.csv": ":3: 1 field(s), expected 2 (id, prediction)",
    "latin1.csv": ":3: the predictions file is not UTF-8 (byte 0xe9",
    "utf16.jsonl": ": the predictions file is encoded as UTF-16 (little-endian)",
}


@pytest.mark.parametrize("name", sorted(PREDICTION_CASES))
def test_a_hostile_predictions_file_is_refused_by_file_and_line(name: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = FUZZ / "predictions" / name
    assert main(["score", "--task", str(BASE_TASK), "--predictions", str(path), "--allow-partial"]) == 2
    err = capsys.readouterr().err
    assert f"{path}{PREDICTION_CASES[name]}" in err, err


def test_null_and_non_text_predictions_are_counted_sample_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """null and a list are that sample's error (zero credit, counted); a number is its digits."""
    path = FUZZ / "predictions" / "null_and_odd_predictions.jsonl"
    assert main(["score", "--task", str(BASE_TASK), "--predictions", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["n_expected"], out["n_errors"]) == (4, 4, 2)
    assert out["metrics"]["accuracy"]["n_errors"] == 2 and out["metrics"]["accuracy"]["n_unparsed"] == 2


def test_the_predictions_corpus_is_complete() -> None:
    names = {p.name for p in (FUZZ / "predictions").iterdir()}
    assert names == {*PREDICTION_CASES, "null_and_odd_predictions.jsonl"}


def test_replayed_null_predictions_are_generation_errors_and_fail_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two of four replayed predictions are unusable: a 50% error rate; over a 0.25 limit the run exits 2 (a
    handful of samples included) and the table shows them as generation errors, apart from unparsed."""
    path = FUZZ / "predictions" / "null_and_odd_predictions.jsonl"
    out = tmp_path / "run"
    assert main(["run", "--model", str(path), "--tasks", str(BASE_TASK), "--output", str(out),
                 "--no-progress", "--max-error-rate", "0.25"]) == 2
    captured = capsys.readouterr()
    assert "task fuzz_base: 2 of 4 samples failed: over the --max-error-rate 0.25" in captured.err
    header = next(line for line in captured.out.splitlines() if line.startswith("| task"))
    assert [c.strip() for c in header.strip("|").split("|")][-3:] == ["unparsed", "gen errors", "samples"]
    assert "fuzz_base: 2 of 4 generations failed" in captured.out
    log = json.loads((out / RUN_FILE).read_text())
    assert log["status"] == "failed" and "over the --max-error-rate" in log["error"]
    rows = RunDir.open(out).rows("fuzz_base")
    errors = sorted(r.generation.error or "" for r in rows if r.generation.error)
    assert len(errors) == 2 and "field 'prediction' is null, not a predicted text" in errors[0] + errors[1]


# --- 7. validate == run without data: the corpus base is valid, so each mutation is what fails ------------


def test_the_task_file_corpus_base_is_valid_and_runs(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(BASE_TASK)]) == 0
    assert main(["run", "--model", "baseline:constant:1", "--tasks", str(BASE_TASK), "--output",
                 str(tmp_path / "r"), "--no-progress"]) == 0


@pytest.mark.parametrize("mutation", ["gen_negative_tokens", "metric_unknown_normalizer",
                                      "template_format_spec", "template_unknown", "group_by_unknown"])
def test_run_refuses_what_validate_refuses_before_any_directory(
        tmp_path: Path, mutation: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = FUZZ / f"{mutation}.yaml"
    expect = path.read_text().split("\n", 1)[0].removeprefix("# expect: ")
    out = tmp_path / "r"
    assert main(["run", "--model", "baseline:constant:1", "--tasks", str(path), "--output", str(out),
                 "--no-progress"]) == 2
    assert f"{path}{expect}" in capsys.readouterr().err
    assert not out.exists()


def test_validate_of_a_missing_file_or_a_directory(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml"), str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"task file {tmp_path / 'nope.yaml'} does not exist" in out
    assert f"{tmp_path}: is a directory, not a task file" in out


def test_a_non_utf8_samples_list_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"count-00000\n\xff\n")
    assert main(["run", "--model", "baseline:constant:1", "--tasks", str(BASE_TASK), "--samples", str(ids),
                 "--output", str(tmp_path / "r")]) == 2
    assert f"{ids}:2: the samples file is not UTF-8 (byte 0xff" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# --- 5. resume identity: task version and definition -------------------------------------------------------


def _task_copy(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "fuzz_base.yaml"
    path.write_text(text or BASE_TASK.read_text())
    return path


def test_resume_refuses_a_changed_task_version_or_definition(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    task = _task_copy(tmp_path)
    out = tmp_path / "r"
    args = ["run", "--model", "baseline:constant:1", "--tasks", str(task), "--output",
            str(out), "--no-progress"]
    assert main([*args, "--limit", "2"]) == 0
    before = (out / "samples" / "fuzz_base.jsonl").read_text()
    task.write_text(BASE_TASK.read_text().replace('version: "1"', 'version: "2"'))
    assert main([*args, "--limit", "2", "--resume"]) == 2
    assert "task fuzz_base version: '1' -> '2'" in capsys.readouterr().err
    task.write_text(BASE_TASK.read_text().replace("Answer with a number.", "Answer with one digit."))
    assert main([*args, "--limit", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"task fuzz_base definition ({task}): hash " in err and "(the task file changed)" in err
    assert (out / "samples" / "fuzz_base.jsonl").read_text() == before  # nothing mixed in
    task.write_text(BASE_TASK.read_text())
    assert main([*args, "--limit", "2", "--resume"]) == 0  # the same definition resumes


def test_score_run_dir_refuses_rows_of_another_task_version(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    task = _task_copy(tmp_path)
    out = tmp_path / "r"
    assert main(["run", "--model", "baseline:constant:1", "--tasks", str(task), "--output", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["score", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_expected"] == 4
    task.write_text(BASE_TASK.read_text().replace('version: "1"', 'version: "2"'))
    assert main(["score", str(out)]) == 2
    assert ("4 of 4 rows of task fuzz_base were made under another task version (4 under version '1'); the "
            f"task file {task} is version '2'") in capsys.readouterr().err


# --- 11. partial and stuck run directories ------------------------------------------------------------------


def test_a_failure_before_the_first_sample_leaves_no_directory(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend that fails while preparing a task (fault injected: a baseline whose prior cannot be read), in
    the run loop but before any row: the run directory it created is removed again."""
    from medharness.backends.baseline import BaselineBackend
    from medharness.core.errors import DataError

    def broken_prepare(self: BaselineBackend, *args: object) -> None:
        raise DataError("injected: the baseline's prior cannot be read")

    monkeypatch.setattr(BaselineBackend, "prepare", broken_prepare)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(FUZZ / "data" / "null_gold.jsonl", data / "test.jsonl")
    (data / "test.jsonl").write_text((data / "test.jsonl").read_text().replace("null", '"no"'))
    task = tmp_path / "hostile.yaml"
    task.write_text(LOCAL_TASK.format(ext="jsonl"))
    out = tmp_path / "r"
    assert main(["run", "--model", "baseline:majority", "--tasks", str(task), "--data-dir", str(data),
                 "--output", str(out), "--no-progress"]) == 2
    assert "injected: the baseline's prior cannot be read" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("leftover", ["samples_only", "failed_no_rows", "running_no_rows", "empty"])
def test_resume_takes_over_a_directory_without_results(tmp_path: Path, leftover: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    (out / "samples").mkdir(parents=True)
    if leftover != "samples_only" and leftover != "empty":
        (out / "samples" / "fuzz_base.jsonl").write_text("")
        status = leftover.split("_")[0]
        (out / RUN_FILE).write_text(json.dumps({"run_id": "r", "status": status,
                                                "config": {"model": "other"}}))
    if leftover == "empty":
        (out / "samples").rmdir()
    args = ["run", "--model", "baseline:constant:1", "--tasks", str(BASE_TASK), "--output", str(out),
            "--no-progress"]
    if leftover != "empty":
        assert main(args) == 2
        assert ("holds a run that stopped before its first sample (no results): pass --resume to take it over"
                in capsys.readouterr().err)
    assert main([*args, "--resume"]) == 0
    log = json.loads((out / RUN_FILE).read_text())
    assert log["status"] == "finished" and log["config"]["model"] == "baseline:constant:1"
    assert len(RunDir.open(out).rows("fuzz_base")) == 4


def test_a_directory_with_results_or_other_files_is_never_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists: pass --resume"):
        RunDir.create(out, RunSettings(model="m", tasks="t"), take_over=True)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="is not a run directory"):
        Runner(RunConfig(model="baseline:constant:1", tasks=str(BASE_TASK)), output=out, resume=True).run()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_an_interrupted_run_is_marked_with_the_reason(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM is turned into the same stop as Ctrl-C: "interrupted", never "running"."""
    import os
    import signal

    from medharness.runs import pipeline

    real = pipeline.build_requests
    calls: list[int] = []

    def terminate(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "build_requests", terminate)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        Runner(RunConfig(model="baseline:constant:1", tasks=str(BASE_TASK), batch_size=1),
               output=tmp_path / "r").run()
    log = json.loads((tmp_path / "r" / RUN_FILE).read_text())
    assert log["status"] == "interrupted" and log["error"] == "stopped by SIGTERM; --resume continues"
    assert (tmp_path / "r" / LOCK_FILE).read_text() == ""
    assert signal.getsignal(signal.SIGTERM) is handler  # restored once the run ends
    assert len(RunDir.open(tmp_path / "r").rows("fuzz_base")) == 1  # the batch before the signal was kept


# --- 12. quiet failure: a few samples, every one failed -----------------------------------------------------


def test_a_dead_server_with_three_samples_exits_non_zero(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openai", reason="the openai backend (the `api` extra)")
    out = tmp_path / "r"
    assert main(["run", "--model", "m", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                 "--max-retries", "0", "--timeout", "2", "--tasks", str(BASE_TASK), "--limit", "3",
                 "--output", str(out), "--no-progress", "--no-cache"]) == 2
    captured = capsys.readouterr()
    assert "task fuzz_base: 3 of 3 samples failed: over the --max-error-rate 0.5" in captured.err
    assert "fuzz_base: 3 of 3 generations failed (no answer from the model" in captured.out
    assert json.loads((out / RUN_FILE).read_text())["status"] == "failed"


@pytest.mark.parametrize("question", ["presence", "count", "side", "size", "box"])
def test_a_sources_declared_meta_fields_are_what_its_samples_carry(question: str) -> None:
    """validate checks group_by and placeholders against `meta_fields`: it must say what load gives."""
    from medharness.taskfiles.sources import Columns, LoadParams, PhantomSource

    source = PhantomSource(kind="phantom", question=question, n=6)
    samples = source.load(LoadParams(task="t"), "test")
    assert {k for s in samples for k in s.meta} == source.meta_fields(Columns())


def test_a_local_sources_meta_fields_follow_its_columns(tmp_path: Path) -> None:
    from medharness.taskfiles.sources import Columns, LoadParams, LocalSource

    (tmp_path / "test.jsonl").write_text('{"qid": 1, "question": "q", "answer": "yes", "organ": "lung"}\n')
    columns = Columns(id="qid", meta={"body": "organ"}, derive_answer_type=True)
    source = LocalSource(kind="local", path="{split}.jsonl", classes="from_data").bind(tmp_path)
    [sample] = source.load(LoadParams(task="t", columns=columns), "test")
    assert set(sample.meta) == source.meta_fields(columns) == {"body", "answer_type", "answer_type_derived",
                                                                "class_name"}


@pytest.mark.timeout(60)
def test_a_fifo_or_a_device_is_refused_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO as a task file or `--samples` would block forever, /dev/zero would fill memory: both are refused
    by name before anything is read or written."""
    import os

    fifo = tmp_path / "ids.json"
    os.mkfifo(fifo)  # nobody ever writes to it: reading it would block
    assert main(["validate", str(fifo)]) == 1
    said = capsys.readouterr().out
    assert f"{fifo}: not a regular file (a pipe, socket or device), so not a task file" in said
    out = tmp_path / "run"
    assert main(["run", "--model", "baseline:majority", "--tasks", "phantom_presence", "--samples", str(fifo),
                 "--output", str(out), "--no-progress"]) == 2
    assert "not a regular file" in capsys.readouterr().err and not out.exists()
    zero = Path("/dev/zero")
    if zero.exists():
        assert main(["validate", str(zero)]) == 1
        assert "/dev/zero: not a regular file" in capsys.readouterr().out
