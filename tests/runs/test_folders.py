"""runs/folders.py: the training and sweep folders' layout and readers (the typed train.json included)."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from medharness.core.errors import ConfigError, DataError
from medharness.runs.folders import RUN_GLOBS, SWEEP_FILE, TRAIN_FILE, SweepDir, TrainDir


def test_a_train_json_written_by_an_earlier_version_or_a_stand_in_still_reads(tmp_path: Path) -> None:
    """Every field but the status has a default: the fake trainer's two-key file and a resumed run's file
    load."""
    (tmp_path / TRAIN_FILE).write_text(json.dumps({"status": "finished", "final": "/m/final"}))
    log = TrainDir(tmp_path).log()
    assert log is not None and log.status == "finished" and log.final == "/m/final" and log.config == {}
    assert TrainDir(tmp_path).state().final == Path("/m/final")
    resumed = {"status": "running", "recipe": "grpo",
               "previous": [{"status": "interrupted", "started": "t0", "finished": "t1", "steps": 3,
                             "error": None}]}
    (tmp_path / TRAIN_FILE).write_text(json.dumps(resumed))
    log = TrainDir(tmp_path).log()
    assert log is not None and log.previous[0].steps == 3 and log.attempt().status == "running"


@pytest.mark.parametrize("text", ["{not json", json.dumps({"final": "/m"}), json.dumps({"status": "done"}),
                                  json.dumps({"status": "finished", "colour": 1})])
def test_an_unreadable_train_json_is_named_and_counts_as_failed(tmp_path: Path, text: str) -> None:
    (tmp_path / TRAIN_FILE).write_text(text)
    with pytest.raises(DataError, match=f"{tmp_path / TRAIN_FILE}: not a readable train.json"):
        TrainDir(tmp_path).log()
    assert TrainDir(tmp_path).state().status == "failed"  # a stage to run again, never a finished one


def test_no_train_json_is_a_run_never_started(tmp_path: Path) -> None:
    assert TrainDir(tmp_path).log() is None and TrainDir(tmp_path).state().status is None


def test_checkpoints_in_step_order_and_only_numbered_ones(tmp_path: Path) -> None:
    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-x", "final"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-3").write_text("a file, not a checkpoint")
    assert [p.name for p in TrainDir(tmp_path).checkpoints()] == ["checkpoint-2", "checkpoint-10"]


def test_the_sweep_layout_is_the_globs_that_find_its_runs(tmp_path: Path) -> None:
    """The paths SweepDir builds are the run directories the leaderboards' globs find (one layout, two
    uses)."""
    folder = SweepDir(tmp_path)
    made = [folder.reference_dir("base", "t"), folder.eval_dir("c1", "t"),
            folder.eval_dir("c1", "t", "checkpoint-4")]
    for path in made:
        path.mkdir(parents=True)
        (path / "run.json").write_text("{}")
    found = [p for pattern in RUN_GLOBS[SWEEP_FILE] for p in sorted(tmp_path.glob(pattern))
             if (p / "run.json").is_file()]
    assert found == made
    cell = [p for p in map(Path, glob.glob(folder.cell_runs("c1"))) if (p / "run.json").is_file()]
    assert cell == [made[1]]  # the final model's runs; a checkpoint's are one folder deeper
    with pytest.raises(ConfigError, match="would leave the output folder"):
        folder.eval_dir("c1", "../../x")


def test_an_unreadable_sweep_json_is_named(tmp_path: Path) -> None:
    assert SweepDir(tmp_path).log() is None
    (tmp_path / SWEEP_FILE).write_text(json.dumps({"sweep_file": "s.yaml"}))
    with pytest.raises(DataError, match=f"{tmp_path / SWEEP_FILE}: not a readable sweep.json"):
        SweepDir(tmp_path).log()
