"""The typed run log: a committed run.json of the previous (untyped) shape still loads, re-scores, judges and
renders; new run logs carry the schema version, seed, label, metric arguments and lineage; only runlog.py
touches the file."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from medharness.checkpoints.lineage import MANIFEST_FILE, CheckpointManifest
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import RUNLOG_SCHEMA, ImportSettings, RunLog, RunSettings
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.rescore import score_run
from medharness.runs.runlog import RunDir, split_lines

OLD = Path(__file__).parents[1] / "data" / "runlog_v0"  # written by medharness 0.1 (commit ff05d3c), judged
GOLDEN = Path(__file__).parents[1] / "data" / "runlog_golden"


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
    # scored under `harness` (version 1): re-scored under the current rules only when asked
    with pytest.raises(ConfigError, match="scored under harness@1; this medharness implements harness@2"):
        score_run(tmp_path / "old")
    summaries = {s.task: s for s in score_run(tmp_path / "old", "harness")}
    assert summaries["phantom_presence"].convention == "harness@2"
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


# run.json's `config` as earlier versions wrote it (`git log -p` of RunConfig and of bridges/importer.py)
FIRST = {"model": "baseline:random", "backend": "auto", "tasks": "phantom_presence", "data_dir": None,
         "overrides": {}, "limit": 0, "batch_size": 8, "max_new_tokens": None, "temperature": None, "seed": 3,
         "backend_options": {}, "max_error_rate": 0.5}  # 0.1: before ranges were checked (limit 0 ran all)
EARLIER_CONFIGS = {
    "0.1": FIRST,
    "ablation": {**FIRST, "ablate": "blank", "samples_file": "ids.txt"},
    "cache": {**FIRST, "ablate": None, "samples_file": None, "cache": False, "cache_dir": "/c"},
    "label": {**FIRST, "ablate": None, "samples_file": None, "cache": True, "cache_dir": None,
              "label": "my run"},  # before labels had to be file names
    "import": {"model": "m", "backend": "import:lm-eval", "tasks": "phantom_presence", "data_dir": None,
               "overrides": {"phantom_presence": {"prompt": "r1"}}, "predictions": "/p/samples.jsonl"},
}


@pytest.mark.parametrize("shape", list(EARLIER_CONFIGS))
def test_every_earlier_config_loads_typed(tmp_path: Path, shape: str) -> None:
    config = EARLIER_CONFIGS[shape]
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r", "status": "finished", "config": config}))
    run = RunDir.open(tmp_path)
    kind = ImportSettings if shape == "import" else RunSettings
    assert type(run.log.config) is kind and run.log.config.model == config["model"]
    assert {k: v for k, v in run.log.config.model_dump().items() if k in config} == config
    assert run.log.config.result_settings()["limit"] == config.get("limit")
    run.set_status("finished")  # saved again: the keys it had keep their values, the rest get defaults
    again = json.loads((tmp_path / "run.json").read_text())["config"]
    assert again == {**kind.model_validate({"model": "x", "tasks": "t", **config}).model_dump(), **config}


def test_a_config_of_neither_shape_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r", "config": {"model": "m", "tasks": "t",
                                                                             "limt": 3}}))
    with pytest.raises(DataError, match="at config.run.limt: Extra inputs are not permitted"):
        RunDir.open(tmp_path)


def test_run_config_is_the_stored_record_with_checks() -> None:
    """`RunConfig` keeps `RunSettings`' keys, order and defaults (run.json's shape) and adds the checks."""
    made, stored = RunConfig.model_fields, RunSettings.model_fields
    assert list(made) == list(stored)
    assert all(made[k].get_default(call_default_factory=True) == f.get_default(call_default_factory=True)
               for k, f in stored.items())
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RunConfig(model="m", tasks="t", limit=0)
    assert RunSettings(model="m", tasks="t", limit=0).limit == 0


def test_new_run_log_records_seed_label_metric_arguments(tmp_path: Path) -> None:
    config = RunConfig(model="baseline:majority", tasks="phantom_presence,phantom_box", limit=6, seed=7,
                       label="floor", overrides={"phantom_presence": {"prompt": "r1"}}, cache=False)
    run = Runner(config, output=tmp_path / "r").run()
    log = RunLog.model_validate_json((tmp_path / "r" / "run.json").read_text())
    assert type(log.config) is RunSettings and log.config == RunSettings(**config.model_dump())
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


def _normalised(file: Path, tmp_path: Path) -> str:
    """run.json's text with what changes from one run to the next (times, versions, wall time, folders)
    replaced by placeholders; every other byte as written."""
    text = file.read_text(encoding="utf-8")
    text = re.sub(r'"(created|updated)": "[^"]*"', r'"\1": "<time>"', text)
    text = re.sub(r'"versions": \{[^}]*\}', '"versions": "<versions>"', text)
    text = re.sub(r'"generate_s": [-+.e0-9]+', '"generate_s": "<seconds>"', text)
    text = re.sub(r'"path": "[^"]*/([^/"]+)"', r'"path": "<tasks>/\1"', text)
    return text.replace(str(tmp_path.resolve()), "<tmp>").replace(str(tmp_path), "<tmp>")


def _golden(text: str, name: str) -> None:
    """`text` is the committed golden file `name`; after a deliberate change of run.json's shape, regenerate
    with MEDHARNESS_UPDATE_GOLDEN=1 and read the diff."""
    file = GOLDEN / name
    if os.environ.get("MEDHARNESS_UPDATE_GOLDEN"):
        file.parent.mkdir(exist_ok=True)
        file.write_text(text, encoding="utf-8")
    assert text == file.read_text(encoding="utf-8")


def test_run_json_is_written_byte_for_byte_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's run.json, config included (its keys in RunConfig's order), is the committed file byte for
    byte."""
    monkeypatch.setattr(sys, "argv", ["medharness", "run"])
    config = RunConfig(model="baseline:majority", tasks="phantom_presence", limit=4, seed=5, label="floor",
                       overrides={"phantom_presence": {"prompt": "r1"}}, temperature=0.0, max_new_tokens=16,
                       cache=False, ablate="blank")
    Runner(config, output=tmp_path / "r").run()
    _golden(_normalised(tmp_path / "r" / "run.json", tmp_path), "run.json")


def test_imported_run_json_is_written_byte_for_byte_as_before(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An imported run's run.json (its config of another shape: the predictions file, no decoding settings)
    is the committed file byte for byte."""
    from medharness.bridges.importer import ImportRequest, import_predictions
    from medharness.taskfiles.task import load_task

    monkeypatch.setattr(sys, "argv", ["medharness", "import"])
    samples = load_task("phantom_presence").load_samples()[:3]
    file = tmp_path / "samples_medharness_phantom_presence.jsonl"
    file.write_text("".join(json.dumps({"doc_id": i, "doc": {"id": s.id}, "resps": [[text]],
                                        "filtered_resps": [text]}) + "\n"
                            for i, (s, text) in enumerate(zip(samples, ["yes", "no", "maybe"]))))
    import_predictions(ImportRequest(tool="lm-eval", file=file, task="phantom_presence",
                                     output=tmp_path / "run", model_name="m", tool_version="0.4.13",
                                     overrides={"prompt": "r1"}, label="peer"))
    _golden(_normalised(tmp_path / "run" / "run.json", tmp_path), "import.json")


def test_split_lines_gives_the_lines_split_gives() -> None:
    for text in ["", "\n", "a", "a\n", "a\nb", "\n\nx\n\n", "é\r\nü\u2028v\n", "{}\n" * 5]:
        assert list(split_lines(text)) == text.split("\n")
