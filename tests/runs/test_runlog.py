"""The typed run log: a committed run.json of the previous (untyped) shape still loads, re-scores, judges and
renders; new run logs carry the schema version, seed, label, metric arguments and lineage; only runlog.py
touches the file."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from medharness.checkpoints.lineage import MANIFEST_FILE, CheckpointManifest
from medharness.core.errors import DataError
from medharness.core.records import RUNLOG_SCHEMA, RunLog
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.rescore import score_run
from medharness.runs.runlog import RunDir, split_lines

OLD = Path(__file__).parents[1] / "data" / "runlog_v0"  # written by medharness 0.1 (commit ff05d3c), judged


def test_previous_shape_loads_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shutil.copytree(OLD, tmp_path / "old")
    raw = json.loads((tmp_path / "old" / "run.json").read_text())
    assert "schema_version" not in raw
    with caplog.at_level(logging.WARNING, logger="medharness.runs.runlog"):
        first = RunDir.open(tmp_path / "old").log
        RunDir.open(tmp_path / "old")
    assert sum("previous shape" in r.message for r in caplog.records) == 1
    assert first.schema_version == RUNLOG_SCHEMA and first.status == "finished"
    presence = first.tasks["phantom_presence"]
    assert (presence.summary is not None
            and presence.summary.n == raw["tasks"]["phantom_presence"]["summary"]["n"])
    assert presence.summary.metrics["yes_no_accuracy"].value == \
        raw["tasks"]["phantom_presence"]["summary"]["metrics"]["yes_no_accuracy"]["value"]
    assert (presence.judges is not None
            and "panel:rarl_v1:prediction_score:majority" in presence.judges.columns)
    assert first.judges["strict"].usage.calls == raw["judges"]["strict"]["usage"]["calls"]
    assert first.usage is not None and first.usage.model_calls == raw["usage"]["model_calls"]
    assert presence.metrics == []  # the old shape did not record metric arguments


def test_previous_shape_rescoring_and_rows(tmp_path: Path) -> None:
    shutil.copytree(OLD, tmp_path / "old")
    run = RunDir.open(tmp_path / "old")
    rows = run.rows("phantom_presence")  # rows of the old shape carry an empty `judgements` list
    assert len(rows) == 12
    summaries = {s.task: s for s in score_run(tmp_path / "old")}
    assert summaries["phantom_presence"].metrics["yes_no_accuracy"].value == \
        run.log.tasks["phantom_presence"].summary.metrics["yes_no_accuracy"].value  # type: ignore[union-attr]


def test_saving_an_old_log_writes_the_new_shape(tmp_path: Path) -> None:
    shutil.copytree(OLD, tmp_path / "old")
    run = RunDir.open(tmp_path / "old")
    run.set_status("finished")
    assert json.loads((tmp_path / "old" / "run.json").read_text())["schema_version"] == RUNLOG_SCHEMA
    assert RunDir.open(tmp_path / "old").log == run.log


def test_newer_or_broken_run_logs_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"run_id": "r", "schema_version": RUNLOG_SCHEMA + 1}))
    with pytest.raises(DataError, match="newer than this medharness"):
        RunDir.open(folder)
    (folder / "run.json").write_text(json.dumps({"run_id": "r", "status": "exploded"}))
    with pytest.raises(DataError, match="status"):
        RunDir.open(folder)
    (folder / "run.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a medharness run log"):
        RunDir.open(folder)


def test_new_run_log_records_seed_label_metric_arguments(tmp_path: Path) -> None:
    config = RunConfig(model="baseline:majority", tasks="phantom_presence,phantom_box", limit=6, seed=7,
                       label="floor", overrides={"phantom_presence": {"prompt": "r1"}}, cache=False)
    run = Runner(config, output=tmp_path / "r").run()
    log = RunLog.model_validate_json((tmp_path / "r" / "run.json").read_text())
    assert log == run.log and log.seed == 7 and log.label == "floor" and log.display_name == "floor"
    assert log.trained_from is None  # a baseline has no lineage
    r1 = log.tasks["phantom_presence"]
    assert r1.prompt == "r1"
    compliance = [m for m in r1.metrics if m.name == "format_compliance"]
    assert compliance and compliance[0].args == {"format": "r1"}
    assert log.tasks["phantom_box"].tokens is not None and log.tasks["phantom_box"].cost_usd is None


def test_trained_from_is_read_from_the_manifest(tmp_path: Path) -> None:
    from medharness.checkpoints.lineage import trained_from

    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert trained_from(str(folder)) is not None and not trained_from(str(folder)).known  # type: ignore[union-attr]
    manifest = CheckpointManifest(base_model="Qwen/Qwen2-VL-2B-Instruct", recipe="grpo",
                                  task="phantom_presence", config={"trl": {"beta": 0.04}},
                                  train_samples_hash="ab", n_train_samples=3, seed=1, step=10)
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json())
    lineage = trained_from(str(folder))
    assert lineage is not None and lineage.known and lineage.recipe == "grpo" and lineage.step == 10
    assert lineage.manifest_hash and len(lineage.manifest_hash) == 16
    assert trained_from("Qwen/Qwen2-VL-2B-Instruct") is None
    (folder / MANIFEST_FILE).write_text("{")
    with pytest.raises(DataError, match="not a medharness checkpoint manifest"):
        trained_from(str(folder))


def test_split_lines_gives_the_lines_split_gives() -> None:
    for text in ["", "\n", "a", "a\n", "a\nb", "\n\nx\n\n", "é\r\nü\u2028v\n", "{}\n" * 5]:
        assert list(split_lines(text)) == text.split("\n")
