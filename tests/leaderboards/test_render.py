"""Leaderboards from run directories: the CLI's Markdown board, and a board of a run log of the previous shape
with its judge columns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.leaderboards.render import collect, render_markdown

OLD = Path(__file__).parents[1] / "data" / "runlog_v0"


def test_leaderboard_from_run_dirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for model in ("baseline:majority", "baseline:constant:no"):
        assert main(["run", "--model", model, "--tasks", "phantom_presence", "--limit", "40",
                     "--output", str(tmp_path / model.replace(":", "_")), "--no-progress"]) == 0
    board = tmp_path / "board.md"
    assert main(["leaderboard", *map(str, sorted(tmp_path.glob("baseline_*"))), "--output", str(board)]) == 0
    text = board.read_text()
    assert "| baseline:constant:no" in text and "| baseline:majority" in text
    assert "phantom_presence · yes_no_accuracy" in text and "± 1.96 × standard error" in text
    assert main(["leaderboard", str(tmp_path / "missing")]) == 2


def test_board_of_a_previous_shape_run_with_judges(tmp_path: Path) -> None:
    shutil.copytree(OLD, tmp_path / "old")
    frame = collect([tmp_path / "old"])
    rule = frame[(frame["task"] == "phantom_presence") & frame["primary"]]
    assert len(rule) == 1 and rule["metric"].iloc[0] == "yes_no_accuracy" and rule["n"].iloc[0] == 12
    judged = frame[frame["judge"] & frame["judge_primary"]]
    assert set(judged["metric"]) >= {"panel:rarl_v1:prediction_score:majority", "judge:strict:prediction_score"}
    text = render_markdown(frame)
    assert "phantom_presence · yes_no_accuracy" in text and "panel:rarl_v1:prediction_score:majority" in text
    assert "phantom_count · accuracy" in text
