"""The run loop, run directory, resume and bad input, with the light backends (baseline, replay)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.runlog import RunDir


def run(tmp_path: Path, name: str = "r", resume: bool = False, **kw: object) -> RunDir:
    config = RunConfig(**{"model": "baseline:majority", "tasks": "phantom", "limit": 30, **kw})
    return Runner(config, output=tmp_path / name, resume=resume).run()


def test_baseline_run_writes_rows_and_summaries(tmp_path: Path) -> None:
    result = run(tmp_path)
    info = json.loads((result.path / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["model"] == "baseline:majority"
    assert set(info["tasks"]) == {"phantom_presence", "phantom_count", "phantom_side",
                                  "phantom_size", "phantom_box"}
    presence = info["tasks"]["phantom_presence"]
    assert presence["summary"]["n"] == 30 and presence["data"]["actual"] == 200
    rows = result.rows("phantom_presence")
    assert len(rows) == 30 and len({r.sample_id for r in rows}) == 30
    # majority of the generated train split is a single answer, so accuracy equals its share in the test rows
    answer = rows[0].generation.text
    share = sum(r.sample.target == answer for r in rows) / 30
    assert presence["summary"]["metrics"]["yes_no_accuracy"]["value"] == pytest.approx(share)


def test_same_inputs_and_seed_give_identical_result_files(tmp_path: Path) -> None:
    a = run(tmp_path, "a", model="baseline:random", seed=3)
    b = run(tmp_path, "b", model="baseline:random", seed=3)
    c = run(tmp_path, "c", model="baseline:random", seed=4)
    for task in a.tasks():
        assert a.task_file(task).read_bytes() == b.task_file(task).read_bytes()
    assert any(a.task_file(t).read_bytes() != c.task_file(t).read_bytes() for t in a.tasks())


def test_resume_continues_without_duplicates(tmp_path: Path) -> None:
    full = run(tmp_path, "full", tasks="phantom_count")
    partial_dir = tmp_path / "partial"
    first = run(tmp_path, "partial", tasks="phantom_count")
    lines = first.task_file("phantom_count").read_text().splitlines(keepends=True)
    # as if killed: 11 rows on disk, the 12th torn mid-write, status still "running"
    first.task_file("phantom_count").write_text("".join(lines[:11]) + lines[11][:40])
    first.set_status("running")
    resumed = run(tmp_path, "partial", resume=True, tasks="phantom_count")
    rows = resumed.rows("phantom_count")
    assert [r.sample_id for r in rows] == [r.sample_id for r in full.rows("phantom_count")]
    assert resumed.task_file("phantom_count").read_text() == full.task_file("phantom_count").read_text()
    assert json.loads((partial_dir / "run.json").read_text())["status"] == "finished"


def test_resume_with_other_settings_refused(tmp_path: Path) -> None:
    run(tmp_path, "x", tasks="phantom_count")
    with pytest.raises(ConfigError, match=r"other settings \(limit: 30 -> 5\)"):
        run(tmp_path, "x", resume=True, tasks="phantom_count", limit=5)


def test_existing_directory_needs_resume(tmp_path: Path) -> None:
    run(tmp_path, "x", tasks="phantom_count")
    with pytest.raises(ConfigError, match="already exists: pass --resume"):
        run(tmp_path, "x", tasks="phantom_count")


@pytest.mark.parametrize("args, message", [
    (["--tasks", "phantom_cuont"], "unknown task 'phantom_cuont'. Did you mean 'phantom_count'?"),
    (["--tasks", "phantom_count", "--backend", "hff"], "unknown backend 'hff'. Did you mean 'hf'?"),
    (["--tasks", "phantom_count", "-T", "phantom_count.prompt=fancy"], "unknown prompt 'fancy'"),
    (["--tasks", "phantom_count", "-T", "phantom_count.promt=r1"], "unknown key 'promt'"),
    (["--tasks", "phantom_count", "-T", "vqa_rad.prompt=r1"], "not in --tasks"),
    (["--tasks", "vqa_rad"], "could not load flaviagiammarino/vqa-rad"),
])
def test_bad_input_fails_cleanly_without_a_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    args: list[str], message: str) -> None:
    out = tmp_path / "never"
    code = main(["run", "--model", "baseline:majority", "--output", str(out), "--no-progress", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_baseline_without_train_or_prior_is_a_labelled_oracle_floor(
    tmp_path: Path, vqa_rad_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test-only copy of VQA-RAD: the baseline runs, the console warns that it is an oracle floor, and the
    run log says so (tests/backends/test_baseline.py checks the boards)."""
    out = tmp_path / "run"
    code = main(["run", "--model", "baseline:majority", "--tasks", "vqa_rad", "--data-dir", str(vqa_rad_dir),
                 "--output", str(out), "--no-progress"])
    assert code == 0
    assert "vqa_rad: ORACLE floor: the golds of the evaluated test split itself (451 samples)" in \
        capsys.readouterr().out
    source = RunDir.open(out).log.tasks["vqa_rad"].baseline
    assert source is not None and source.kind == "oracle"


def test_constant_baseline_on_real_vqa_rad(tmp_path: Path, vqa_rad_dir: Path) -> None:
    result = run(tmp_path, "v", model="baseline:constant:no", tasks="vqa_rad",
                 data_dir=str(vqa_rad_dir), limit=None)
    summary = result.log.tasks["vqa_rad"].summary.model_dump()
    assert summary["n"] == 451 and summary["n_unparsed"] == 0
    # "no" is right exactly for the 133 "no" golds (all CLOSED)
    assert summary["metrics"]["vqa_accuracy"]["value"] == pytest.approx(133 / 451)
    assert summary["groups"]["answer_type"]["CLOSED"]["n"] == 272
    closed, open_ = (summary["groups"]["answer_type"][k]["metrics"]["vqa_accuracy"]
                     for k in ("CLOSED", "OPEN"))
    assert closed["value"] == pytest.approx(133 / 272) and open_["value"] == 0.0
    # intervals clustered by image: 451 questions on fewer images; never 0 +- 0 at 0%
    head = summary["metrics"]["vqa_accuracy"]
    rows = result.rows("vqa_rad")
    assert head["n_clusters"] == len({r.sample.images[0] for r in rows}) < 451
    assert head["ci_method"] == "bootstrap-percentile" and head["ci_low"] < 133 / 451 < head["ci_high"]
    assert open_["ci_method"] == "wilson-clusters" and open_["ci_low"] == 0.0 < open_["ci_high"]


def test_replay_backend_and_missing_predictions(tmp_path: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": f"count-{i:05d}", "prediction": "two"}) + "\n"
                             for i in range(10)))
    result = run(tmp_path, "rp", model=str(preds), tasks="phantom_count", limit=12, max_error_rate=1.0)
    rows = result.rows("phantom_count")
    assert result.log.model.startswith("replay:")
    assert sum(r.generation.error is not None for r in rows) == 2
    assert "no prediction for id 'count-00011'" in rows[-1].generation.error
    summary = result.log.tasks["phantom_count"].summary.model_dump()
    assert summary["n_errors"] == 2 and summary["n_unparsed"] == 2
    expected = sum(r.sample.target == "2" for r in rows[:10]) / 12
    assert summary["metrics"]["accuracy"]["value"] == pytest.approx(expected)


def test_error_threshold_stops_the_run_and_keeps_rows(tmp_path: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "nothing", "prediction": "x"}) + "\n")
    with pytest.raises(Exception, match="over the --max-error-rate 0.5"):
        run(tmp_path, "bad", model=str(preds), tasks="phantom_count", max_error_rate=0.5)
    reopened = RunDir.open(tmp_path / "bad")
    assert reopened.log.status == "failed"
    assert len(reopened.rows("phantom_count")) == 24  # three batches of 8 were written before stopping
