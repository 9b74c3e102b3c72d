"""Plots are written, and read back with Pillow have the expected number of series: each series is drawn in
the next colour of matplotlib's default cycle, so series k shows colour k and no series shows colour n."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("krippendorff")  # the judge agreement statistics
from PIL import Image

from medharness.cli import main
from medharness.judges.audit import agreement_reports
from medharness.leaderboards import plots
from medharness.leaderboards.board import build
from medharness.leaderboards.spec import load_board
from medharness.runs.runlog import RunDir

GOLDEN = Path(__file__).parent / "golden"
OLD = Path(__file__).parents[1] / "data" / "runlog_v0"
CYCLE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def series_in(png: Path) -> int:
    """How many leading colours of the default cycle the image contains (exact pixels)."""
    with Image.open(png) as image:
        colours = {c[:3] for _, c in image.convert("RGBA").getcolors(maxcolors=1 << 20)}
    rgb = [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in CYCLE]
    count = 0
    while count < len(rgb) and rgb[count] in colours:
        count += 1
    assert count == len(rgb) or rgb[count] not in colours
    return count


def test_bars_one_series_per_row(phantom_runs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(phantom_runs)
    board = build(load_board(GOLDEN / "phantom.yaml"))
    out = tmp_path / "bars.png"
    drawn = plots.bars(board, out)
    assert drawn == 4 == sum(r.kind != "delta" for r in board.rows)  # the delta row is not drawn
    assert series_in(out) == 4


def test_accuracy_against_shots_one_line_per_method(tmp_path: Path) -> None:
    board = build(load_board("vrft_table1"))
    written = plots.board_plots(board, tmp_path)
    assert [p.name for p in written] == ["vrft_table1-bars.png", "vrft_table1-shots.png"]
    methods = {r.method for r in board.rows if r.method}
    assert len(methods) == 5 and series_in(tmp_path / "vrft_table1-shots.png") == 5


def test_reward_curves_from_training_logs(tmp_path: Path) -> None:
    """Two training folders in the trainers' formats: TRL's `reward` per logging step in logs.jsonl, and
    (a run whose logs.jsonl has no reward) the completions' `total` in completions.jsonl."""
    grpo, other = tmp_path / "grpo", tmp_path / "dpo"
    grpo.mkdir()
    other.mkdir()
    (grpo / "logs.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.1, "reward": s / 10}) + "\n"
                                             for s in range(1, 6)) + '{"step": 6, "rew')  # a torn last line
    (other / "logs.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    (other / "completions.jsonl").write_text("".join(
        json.dumps({"step": s, "sample_id": f"x{k}", "text": "yes", "answer": "yes", "parsed": True,
                    "rewards": {"accuracy": float(k % 2)}, "total": float(k % 2)}) + "\n"
        for s in (1, 2) for k in range(4)))
    assert plots.reward_curve(grpo) == [(s, s / 10) for s in range(1, 6)]
    assert plots.reward_curve(other) == [(1, 0.5), (2, 0.5)]
    out = tmp_path / "rewards.png"
    assert plots.reward_curves({"grpo": grpo, "dpo": other, "sft": tmp_path}, out) == 2
    assert series_in(out) == 2


def test_judge_agreement_chart(tmp_path: Path) -> None:
    shutil.copytree(OLD, tmp_path / "run")
    reports = agreement_reports(RunDir.open(tmp_path / "run"), n_boot=200)
    out = tmp_path / "judges.png"
    assert plots.judge_agreement(reports, out) == 2  # percent agreement and Cohen's kappa
    assert series_in(out) == 2


def test_cli_plot_folder(phantom_runs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(phantom_runs)
    assert main(["leaderboard", "runs/majority", "runs/constant_no", "--plot", str(tmp_path / "p"),
                 "--output", str(tmp_path / "b.md")]) == 0
    assert f"wrote {tmp_path / 'p' / 'default-bars.png'}" in capsys.readouterr().out
    assert series_in(tmp_path / "p" / "default-bars.png") == 2
