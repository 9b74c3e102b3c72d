"""Importing peers' files (bridges/): VLMEvalKit prediction files in its documented schema (written here, with
its traps), lm-eval / lmms-eval logged samples, bad input; and the exported folders. Offline, on
phantom_presence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from medharness.bridges.export import export_task
from medharness.bridges.importer import ImportRequest, import_predictions
from medharness.cli import main
from medharness.core.errors import DataError
from medharness.runs.rescore import score_predictions
from medharness.runs.runlog import RunDir
from medharness.taskfiles.task import load_task

TASK = "phantom_presence"
N = 6


@pytest.fixture(scope="module")
def samples() -> list:
    return load_task(TASK).load_samples()[:N]


def _answers(samples: list) -> list[str]:
    """Right, wrong, a hedge (unparsed) and empty, so scores and unparsed counts are both exercised."""
    out = []
    for i, s in enumerate(samples):
        flip = {"yes": "no", "no": "yes"}[s.target]
        out.append([s.target, flip, "maybe", "", f"{s.target.capitalize()}.", s.target][i % 6])
    return out


def _expected(tmp_path: Path, samples: list, answers: list[str]) -> float:
    """medharness's own score of the same texts, through the predictions-file path (not the import code)."""
    preds = tmp_path / "expected.jsonl"
    preds.write_text("".join(json.dumps({"id": s.id, "prediction": a}) + "\n"
                             for s, a in zip(samples, answers)))
    summary, _ = score_predictions(TASK, preds, allow_partial=True)
    return summary.metrics["yes_no_accuracy"].value


@pytest.fixture(scope="module")
def vlm_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vlmevalkit") / "export"
    export_task("vlmevalkit", TASK, out, limit=N)
    return out


def test_vlmevalkit_export_is_its_custom_tsv(vlm_export: Path, samples: list) -> None:
    table = pd.read_csv(vlm_export / f"medharness_{TASK}.tsv", sep="\t")
    assert list(table.columns[:3]) == ["index", "image", "question"]
    assert {"answer", "category"} <= set(table.columns)
    assert table["index"].tolist() == list(range(N))
    assert table["answer"].tolist() == [s.target for s in samples]
    ids = pd.read_csv(vlm_export / "ids.tsv", sep="\t")
    assert ids["id"].tolist() == [s.id for s in samples]
    import base64
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(table["image"][0])))
    assert image.size == load_task(TASK).open_image(samples[0].images[0]).size


def _vlm_predictions(vlm_export: Path, samples: list, answers: list[str]) -> pd.DataFrame:
    """A VLMEvalKit prediction table: the dataset's columns less `image`, plus `prediction`; rows shuffled
    (the `index` is what identifies a row, not its position); a blank prediction is NaN, as a spreadsheet
    gives it."""
    table = pd.read_csv(vlm_export / f"medharness_{TASK}.tsv", sep="\t").drop(columns=["image"])
    table["prediction"] = [a if a else math.nan for a in answers]
    table["A"], table["B"] = math.nan, math.nan  # option columns exist but are blank on VQA rows
    return table.iloc[::-1].reset_index(drop=True)


@pytest.mark.parametrize("suffix", [".xlsx", ".tsv"])
def test_vlmevalkit_file_imports_and_scores_like_medharness(tmp_path: Path, vlm_export: Path, samples: list,
                                                            suffix: str) -> None:
    if suffix == ".xlsx":
        pytest.importorskip("openpyxl", reason="the peers extra (openpyxl) reads .xlsx")
    answers = _answers(samples)
    table = _vlm_predictions(vlm_export, samples, answers)
    file = tmp_path / f"MyVLM_medharness_{TASK}{suffix}"
    if suffix == ".xlsx":
        # index read back as 3.0
        table.astype({"index": float}).to_excel(file, index=False, engine="openpyxl")
    else:
        table.to_csv(file, sep="\t", index=False)
    run = import_predictions(ImportRequest(tool="vlmevalkit", file=file, task=TASK, output=tmp_path / "run",
                                           id_map=vlm_export / "ids.tsv", allow_unmatched=True))
    log = RunDir.open(run.path).log
    entry = log.tasks[TASK]
    assert entry.origin is not None and entry.origin.model == "MyVLM" and entry.origin.n_matched == N
    assert entry.summary is not None
    assert (entry.summary.metrics["yes_no_accuracy"].value
            == pytest.approx(_expected(tmp_path, samples, answers)))
    assert entry.summary.n_unparsed == sum(1 for a in answers if a in ("maybe", ""))
    rows = {r.sample.id: r.generation.text for r in RunDir.open(run.path).rows(TASK)}
    assert rows == {s.id: a for s, a in zip(samples, answers)}


def test_vlmevalkit_file_of_another_dataset_is_refused(tmp_path: Path, vlm_export: Path,
                                                       samples: list) -> None:
    table = _vlm_predictions(vlm_export, samples, _answers(samples))
    table["question"] = "Which organ is shown?"  # same row numbers, another dataset's questions
    file = tmp_path / "MyVLM_other.tsv"
    table.to_csv(file, sep="\t", index=False)
    with pytest.raises(DataError, match=rf"{file}.*{N} of {N} rows differs.*0 rows matched"):
        import_predictions(ImportRequest(tool="vlmevalkit", file=file, task=TASK, output=tmp_path / "run",
                                         id_map=vlm_export / "ids.tsv"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["unclosed_quote", "latin1", "utf16"])
def test_a_broken_id_map_or_prediction_table_is_a_clean_error(tmp_path: Path, vlm_export: Path, samples: list,
                                                              case: str) -> None:
    """Through the common file reader: an id map with an unclosed quote, or a table that is not UTF-8, is an
    error naming the file (it was a pandas traceback)."""
    good = tmp_path / "MyVLM_ok.tsv"
    _vlm_predictions(vlm_export, samples, _answers(samples)).to_csv(good, sep="\t", index=False)
    text = (vlm_export / "ids.tsv").read_text()
    ids = tmp_path / "ids.tsv"
    if case == "unclosed_quote":
        ids.write_text(text.replace("\n", '\n"', 1))
        file, id_map, match = good, ids, "--id-map .*ids.tsv: not a readable TSV"
    else:
        file = tmp_path / "MyVLM_bad.tsv"
        file.write_bytes(good.read_text().replace("yes", "yés").encode("latin-1" if case == "latin1"
                                                                       else "utf-16"))
        id_map, match = vlm_export / "ids.tsv", f"{file}(:2)?: .*(UTF-8|UTF-16)"
    with pytest.raises(DataError, match=match):
        import_predictions(ImportRequest(tool="vlmevalkit", file=file, task=TASK, output=tmp_path / "run",
                                         id_map=id_map, model_name="m"))
    assert not (tmp_path / "run").exists()


def _lm_eval_line(doc_id: int, sample_id: str, text: str, **extra: object) -> str:
    record = {"doc_id": doc_id, "doc": {"id": sample_id, "text": "q"}, "target": "yes",
              "arguments": {"gen_args_0": {"arg_0": "prompt"}}, "resps": [[text]], "filtered_resps": [text],
              "filter": "none", "metrics": ["yes_no_accuracy"], **extra}
    return json.dumps(record) + "\n"


def test_lm_eval_samples_import_with_results_file(tmp_path: Path, samples: list) -> None:
    answers = _answers(samples)
    folder = tmp_path / "out" / "my__model"
    folder.mkdir(parents=True)
    file = folder / f"samples_medharness_{TASK}_2026-01-01T00-00-00.jsonl"
    file.write_text("".join(_lm_eval_line(i, s.id, a) for i, (s, a) in enumerate(zip(samples, answers))))
    (folder / "results_2026-01-01T00-00-00.json").write_text(json.dumps(
        {"model_name": "/models/my-model", "model_source": "hf-multimodal", "lm_eval_version": "0.4.13",
         "config": {"model": "hf-multimodal"}}))
    code = main(["import", "--from", "lm-eval", str(file), "--task", TASK, "--output", str(tmp_path / "run")])
    assert code == 0
    log = RunDir.open(tmp_path / "run").log
    assert log.model == "lm-eval==0.4.13:hf-multimodal:/models/my-model"
    assert log.origin is not None and str(file) in log.origin
    entry = log.tasks[TASK]
    assert entry.origin is not None and entry.origin.id_mapping == "doc.id"
    assert entry.summary is not None
    assert (entry.summary.metrics["yes_no_accuracy"].value
            == pytest.approx(_expected(tmp_path, samples, answers)))
    board = tmp_path / "board.md"
    assert main(["leaderboard", str(tmp_path / "run"), "--output", str(board)]) == 0
    assert "my-model" in board.read_text()
    # a label is a name as `run --label` takes it, never a path
    assert main(["import", "--from", "lm-eval", str(file), "--task", TASK, "--output", str(tmp_path / "run2"),
                 "--label", "../../x"]) == 2
    assert not (tmp_path / "run2").exists()


def test_lmms_eval_samples_need_the_docs_for_ids(tmp_path: Path, samples: list) -> None:
    """lmms-eval 0.7 drops `doc` and flattens one-request responses: ids come from the exported docs by
    doc_id."""
    docs = tmp_path / "export"
    export_task("lmms-eval", TASK, docs, limit=N)
    answers = _answers(samples)
    texts = [json.loads(line)["text"] for line in (docs / "docs.jsonl").read_text().splitlines()]
    file = tmp_path / f"20260101_000000_samples_medharness_{TASK}.jsonl"
    file.write_text("".join(json.dumps({"doc_id": i, "target": str(s.target), "filtered_resps": a,
                                        "input": texts[i]}) + "\n"
                            for i, (s, a) in enumerate(zip(samples, answers))))
    with pytest.raises(DataError, match="--id-map"):
        import_predictions(ImportRequest(tool="lmms-eval", file=file, task=TASK, output=tmp_path / "r0",
                                         model_name="m"))
    run = import_predictions(ImportRequest(tool="lmms-eval", file=file, task=TASK, output=tmp_path / "run",
                                           model_name="m", id_map=docs / "docs.jsonl"))
    rows = {r.sample.id: r.generation.text for r in run.rows(TASK)}
    assert rows == {s.id: a for s, a in zip(samples, answers)}


def test_an_id_map_is_checked_row_by_row_and_problems_come_together(tmp_path: Path, samples: list) -> None:
    """A samples file of another task (an lmms-eval MME file used to become an N/N "matched" run), a docs file
    that is reordered, and a doc_id that is no row number are refused; several problems of one file are
    reported in one error (no model name, rows against the map)."""
    docs = tmp_path / "export"
    export_task("lmms-eval", TASK, docs, limit=N)
    rows = [json.loads(line) for line in (docs / "docs.jsonl").read_text().splitlines()]
    answers = _answers(samples)

    def write(name: str, records: list[dict]) -> Path:
        file = tmp_path / f"20260101_000000_samples_{name}.jsonl"
        file.write_text("".join(json.dumps(r) + "\n" for r in records))
        return file

    def refused(file: Path, match: str, **kw: object) -> None:
        with pytest.raises(DataError, match=match):
            import_predictions(ImportRequest(tool="lmms-eval", file=file, task=TASK, output=tmp_path / "run",
                                             id_map=docs / "docs.jsonl", **{"model_name": "m", **kw}))
        assert not (tmp_path / "run").exists()

    mme = write("mme", [{"doc_id": i, "target": "Yes", "input": f"Is this a photo of a dog? {i}",
                         "filtered_resps": ["Yes"]} for i in range(N)])
    refused(mme, f"{N} of its {N} rows contradict the row of .*docs.jsonl.*line 1, doc_id 0: target 'Yes'")
    shifted = write("shifted", [{"doc_id": (i + 1) % N, "target": str(s.target), "input": rows[i]["text"],
                                 "filtered_resps": [a]} for i, (s, a) in enumerate(zip(samples, answers))])
    refused(shifted, "contradict the row of .*: a file of another task, or a docs file that is stale or "
                     "reordered")
    for bad in (None, "3", 1.5, True):
        refused(write("bad_id", [{"doc_id": bad, "filtered_resps": ["yes"]}]),
                "doc_id .* is not a row number")
    refused(mme, r"2 problems: \(1\) .*contradict the row.*; \(2\) the file does not name its model",
            model_name=None)


@pytest.mark.parametrize("case", ["other_task", "other_version", "duplicate", "no_id", "partly_unmatched"])
def test_bad_lm_eval_files_are_refused_with_counts(tmp_path: Path, samples: list, case: str) -> None:
    file = tmp_path / f"samples_x_{case}.jsonl"
    lines = [_lm_eval_line(i, s.id, "yes") for i, s in enumerate(samples)]
    expect = ""
    if case == "other_task":
        lines = [_lm_eval_line(i, f"vqa-rad-{i}", "yes") for i in range(N)]
        expect = f"0 of its {N} rows match a sample of task {TASK}"
    elif case == "other_version":  # an older log: no `resps` lists, only a string
        lines = [json.dumps({"doc_id": 0, "doc": {"id": samples[0].id}, "resps": "yes"}) + "\n"]
        expect = "not an lm-eval samples file"
    elif case == "duplicate":
        lines.append(_lm_eval_line(N, samples[0].id, "no"))
        expect = f"{N + 1} of its {N + 1} rows match.*1 id\\(s\\) appear more than once"
    elif case == "no_id":
        lines[2] = json.dumps({"doc_id": 2, "doc": {"text": "q"}, "resps": [["yes"]]}) + "\n"
        expect = ":3: its doc has no 'id' field"
    else:
        lines.append(_lm_eval_line(N, "presence-99999", "no"))
        expect = f"{N} of its {N + 1} rows match.*1 match none"
    file.write_text("".join(lines))
    with pytest.raises(DataError, match=f"{file}.*{expect}" if case != "no_id" else expect):
        import_predictions(ImportRequest(tool="lm-eval", file=file, task=TASK, output=tmp_path / "run",
                                         model_name="m"))
    assert not (tmp_path / "run").exists()
    code = main(["import", "--from", "lm-eval", str(file), "--task", TASK, "--output", str(tmp_path / "run"),
                 "--model-name", "m"])
    assert code == 2  # a clear error, no traceback


# The shape of a real lm-eval 0.4 multiple-choice record (`--log_samples` of a loglikelihood task such as
# pubmedqa): one request per option, each response a [logprob, is_greedy] pair written as strings by lm-eval's
# sanitize_list, `filtered_resps` the pairs, and the per-doc `acc` / `acc_norm`.
def _loglikelihood_line(i: int, sid: str, strings: bool = True) -> str:
    pairs = [[-0.1634, True], [-2.3111, False], [-3.0048, False]]
    resps = [[[str(lp), str(g)] if strings else [lp, g]] for lp, g in pairs]
    record = {"doc_id": i, "doc": {"id": sid, "question": "q"}, "target": 0,
              "arguments": [[["q", f" {o}"]] for o in ("yes", "no", "maybe")], "resps": resps,
              "filtered_resps": [r[0] for r in resps], "filter": "none", "metrics": ["acc", "acc_norm"],
              "doc_hash": "h", "prompt_hash": "p", "target_hash": "t", "acc": 1.0, "acc_norm": 1.0}
    return json.dumps(record) + "\n"


@pytest.mark.parametrize("tool", ["lm-eval", "lmms-eval"])
@pytest.mark.parametrize("strings", [True, False])
def test_a_log_likelihood_file_is_refused_not_imported_as_numbers(tmp_path: Path, samples: list, tool: str,
                                                                   strings: bool) -> None:
    """A multiple-choice file holds scores per option, not an answer: it used to import "-0.1634" as the
    answer of every row (a 0 % run, flagged only as unparsed)."""
    file = tmp_path / "samples_pubmedqa.jsonl"
    file.write_text("".join(_loglikelihood_line(i, s.id, strings) for i, s in enumerate(samples)))
    with pytest.raises(DataError, match=r":1: a log-likelihood record \(a multiple-choice task"):
        import_predictions(ImportRequest(tool=tool, file=file, task=TASK, output=tmp_path / "run",
                                         model_name="m"))
    assert not (tmp_path / "run").exists()
    bare = tmp_path / "bare.jsonl"  # the pairs alone, without the acc fields, are refused as well
    records = [json.loads(_loglikelihood_line(i, s.id, strings)) for i, s in enumerate(samples)]
    bare.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("acc", "acc_norm")}) + "\n"
                            for r in records))
    with pytest.raises(DataError, match="a log-likelihood record"):
        import_predictions(ImportRequest(tool=tool, file=bare, task=TASK, output=tmp_path / "run",
                                         model_name="m"))


def test_lm_eval_export_renders_medharness_prompts(tmp_path: Path, samples: list) -> None:
    import yaml

    out = tmp_path / "lm"
    export_task("lm-eval", TASK, out, limit=N)
    docs = [json.loads(line) for line in (out / "docs.jsonl").read_text().splitlines()]
    task = load_task(TASK)
    for doc, sample in zip(docs, samples):
        prompt = task.render(sample, task.settings())
        text = "".join(p.text or "" for p in prompt.messages[-1].content)
        assert doc["id"] == sample.id and doc["text"] == text and doc["prompt"] == "<image>" + text
        assert (out / doc["images"][0]).is_file()

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))
    config = yaml.load((out / f"medharness_{TASK}.yaml").read_text(), Loader=Loader)
    assert config["process_results"] == ("function", "utils.process_results")
    assert config["generation_kwargs"]["max_gen_toks"] == task.settings().max_new_tokens
    import importlib.util

    spec = importlib.util.spec_from_file_location("exported_utils", out / "utils.py")
    assert spec is not None and spec.loader is not None
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    scores = [utils.process_results(doc, [a])["yes_no_accuracy"] for doc, a in zip(docs, _answers(samples))]
    assert utils.mean_defined(scores) == pytest.approx(_expected(tmp_path, samples, _answers(samples)))


def test_vlmevalkit_multiple_choice_rows(tmp_path: Path) -> None:
    """phantom_side (left/right): options A/B filled, C/D blank (NaN), the answer a letter; VLMEvalKit's
    letter predictions are read by the task's own choice parser."""
    out = tmp_path / "export"
    export_task("vlmevalkit", "phantom_side", out, limit=N)
    sides = load_task("phantom_side").load_samples()[:N]
    table = pd.read_csv(out / "medharness_phantom_side.tsv", sep="\t")
    assert table["A"].tolist() == ["left"] * N and table["B"].tolist() == ["right"] * N
    assert table["answer"].tolist() == ["A" if s.target == "left" else "B" for s in sides]
    table = table.drop(columns=["image"])
    table["C"], table["D"] = math.nan, math.nan
    letters = ["A", "B", "(B)", "", "B. right", "A"]
    table["prediction"] = [x if x else math.nan for x in letters]
    file = tmp_path / "MyVLM_medharness_phantom_side.tsv"
    table.to_csv(file, sep="\t", index=False)
    run = import_predictions(ImportRequest(tool="vlmevalkit", file=file, task="phantom_side",
                                           output=tmp_path / "run", id_map=out / "ids.tsv",
                                           allow_unmatched=True))
    preds = tmp_path / "expected.jsonl"
    preds.write_text("".join(json.dumps({"id": s.id, "prediction": x}) + "\n"
                             for s, x in zip(sides, letters)))
    expected, _ = score_predictions("phantom_side", preds, allow_partial=True)
    summary = run.log.tasks["phantom_side"].summary
    assert summary is not None and summary.metrics == expected.metrics and summary.n_unparsed == 1


def test_export_cli_and_a_dataset_tsv_given_as_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    out = tmp_path / "export"
    assert main(["export", "--to", "vlmevalkit", TASK, "--output", str(out), "--limit", "3"]) == 0
    # not empty
    assert main(["export", "--to", "vlmevalkit", TASK, "--output", str(out), "--limit", "3"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    dataset = out / f"medharness_{TASK}.tsv"  # the dataset itself, not a prediction file: no `prediction`
    code = main(["import", "--from", "vlmevalkit", str(dataset), "--id-map", str(out / "ids.tsv"), "--task",
                 TASK, "--output", str(tmp_path / "run")])
    assert code == 2 and "no column prediction: not a VLMEvalKit prediction file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_lone_surrogate_in_a_peer_response_is_one_replaced_character(tmp_path: Path, samples: list) -> None:
    """`"\\ud800"` is valid JSON no UTF-8 file can hold: it used to crash `import` after its run folder
    existed (left "running", no rows). Read through the common reader, it becomes U+FFFD and the row is
    kept."""
    file = tmp_path / f"samples_medharness_{TASK}_2026-01-01T00-00-00.jsonl"
    texts = [s.target + (" \ud800" if i == 1 else "") for i, s in enumerate(samples)]
    file.write_text("".join(_lm_eval_line(i, s.id, t) for i, (s, t) in enumerate(zip(samples, texts))))
    assert "\\ud800" in file.read_text()
    assert main(["import", "--from", "lm-eval", str(file), "--task", TASK, "--output", str(tmp_path / "run"),
                 "--model-name", "m"]) == 0
    run = RunDir.open(tmp_path / "run")
    assert run.log.status == "finished"
    rows = {r.sample.id: r.generation.text for r in run.rows(TASK)}
    assert rows[samples[1].id] == f"{samples[1].target} \ufffd" and len(rows) == N


def test_a_number_of_thousands_of_digits_is_a_clean_error(tmp_path: Path) -> None:
    file = tmp_path / f"samples_medharness_{TASK}_2026.jsonl"
    file.write_text('{"doc_id": ' + "9" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"samples_medharness_.*:1: cannot read a JSON value"):
        import_predictions(ImportRequest(tool="lm-eval", file=file, task=TASK, output=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_an_xlsx_bomb_or_a_broken_xlsx_is_refused_unread(tmp_path: Path, vlm_export: Path) -> None:
    """A sheet that inflates far past what a prediction table needs is refused from the zip's directory,
    before a byte is inflated; a file that is no zip (or is truncated) is a clean error."""
    import zipfile

    from medharness.bridges.peerfiles import check_zip_size

    bomb = tmp_path / "MyVLM_bomb.xlsx"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"0" * (2 * 2**20))  # 2 MB of zeros: a few KB zipped
    assert bomb.stat().st_size < 2**16
    with pytest.raises(DataError, match="sheet1.xml inflates to 2,097,152 bytes"):
        check_zip_size(bomb, limit=2**20)
    for name, data in (("not_zip.xlsx", b"index\tprediction\n"), ("cut.xlsx", bomb.read_bytes()[:100])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match="not a readable .xlsx"):
            import_predictions(ImportRequest(tool="vlmevalkit", file=tmp_path / name, task=TASK,
                                             output=tmp_path / "run", id_map=vlm_export / "ids.tsv"))
    assert not (tmp_path / "run").exists()
