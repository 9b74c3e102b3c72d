"""PNG plots with matplotlib (the `plots` extra; imported inside each function, with the Agg backend, so the
rest of medharness never needs it): per-task bars with intervals, accuracy against shots per method, training
reward curves, and a judge agreement chart. Each function writes one file and returns the number of series
it drew (bars per row, lines per method or training run), which the tests read back."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.core.errors import ConfigError
from medharness.leaderboards.table import Board, Row
from medharness.runs.folders import COMPLETIONS_FILE, LOGS_FILE, TrainDir


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'medharness[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)


def _err(value: float, low: float | None, high: float | None) -> tuple[float, float]:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return 0.0, 0.0
    return max(value - low, 0.0), max(high - value, 0.0)


def bars(board: Board, path: Path) -> int:
    """Grouped bars: one group per column (Average left out), one bar per row, whiskers = the cell's
    interval."""
    plt = _pyplot()
    columns = [c for c in board.columns if c.label != "Average"]
    rows = [r for r in board.rows if r.kind != "delta"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(columns) * max(1, len(rows)) / 2), 4.5))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        xs: list[float] = []
        ys: list[float] = []
        errs: tuple[list[float], list[float]] = ([], [])
        for j, col in enumerate(columns):
            v = board.cell(row.label, col.label)
            if v.value is None or math.isnan(v.value):
                continue
            xs.append(j + (i - (len(rows) - 1) / 2) * width)
            ys.append(v.value)
            lo, hi = _err(v.value, v.low, v.high)
            errs[0].append(lo)
            errs[1].append(hi)
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=row.label)
    ax.set_xticks(range(len(columns)), [c.label for c in columns], rotation=20, ha="right")
    ax.set_ylabel("value (x100 for rates), 95% interval")
    ax.set_title(board.spec.title or board.spec.name)
    ax.legend(fontsize="small")
    _save(fig, path)
    return len(rows)


def shots(board: Board, path: Path) -> int:
    """Accuracy against shots, one line per method: the rows with `method` and `shots`, the Average column
    where the board has one, else its first column."""
    plt = _pyplot()
    col = next((c for c in board.columns if c.label == "Average"), board.columns[0])
    methods: dict[str, list[Row]] = {}
    for row in board.rows:
        if row.method is not None and row.shots is not None:
            methods.setdefault(row.method, []).append(row)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method, rows in methods.items():
        points = sorted((r.shots, board.cell(r.label, col.label)) for r in rows
                        if board.cell(r.label, col.label).value is not None)
        xs = [p[0] for p in points]
        ys = [p[1].value for p in points]
        bounds = [_err(v.value or 0.0, v.low, v.high) for _, v in points]
        errs = [[b[0] for b in bounds], [b[1] for b in bounds]]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method)
    ax.set_xscale("symlog", linthresh=10)  # 0, 10, 20, 256 shots: a log axis that keeps zero-shot
    ax.set_xlabel("shots (training images per class)")
    ax.set_ylabel(col.label)
    ax.set_title(f"{board.spec.name}: {col.label} against shots")
    ax.legend(fontsize="small")
    _save(fig, path)
    return len(methods)


def reward_curve(train_dir: Path) -> list[tuple[int, float]]:
    """(step, mean reward) of one training run: TRL's `reward` in `logs.jsonl`, else the mean `total` of each
    step's completions in `completions.jsonl`; [] when neither has one."""
    folder = TrainDir(train_dir)
    points: dict[int, list[float]] = {}
    for row in folder.log_rows():
        if (reward := row.metric("reward")) is not None:
            points.setdefault(row.step, []).append(reward)
    if not points:
        for done in folder.completion_rows():
            if done.step is not None and done.total is not None:
                points.setdefault(done.step, []).append(done.total)
    return sorted((step, sum(v) / len(v)) for step, v in points.items())


def training_dirs(board: Board) -> dict[str, Path]:
    """Each row's training folder with a training log: beside its run in a sweep (`cells/ID/train` for
    `cells/ID/eval/TASK`) or a training output (`OUTPUT` for `OUTPUT/evals/step-N`), else where the run's
    lineage says its checkpoint is."""
    out: dict[str, Path] = {}
    for row in board.rows:
        for run in row.runs:
            t = run.log.trained_from
            if t is None:
                continue
            near = [run.path.parent.parent / "train", run.path.parent.parent]
            for folder in (*near, Path(t.checkpoint).parent, Path(t.checkpoint)):
                if (folder / LOGS_FILE).is_file() or (folder / COMPLETIONS_FILE).is_file():
                    out.setdefault(row.label, folder)
                    break
    return out


def reward_curves(train_dirs: dict[str, Path], path: Path) -> int:
    """One line per training run with a reward (GRPO, DPO rewards; SFT logs none): mean reward per step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    drawn = 0
    for label, folder in train_dirs.items():
        curve = reward_curve(folder)
        if curve:
            ax.plot([s for s, _ in curve], [v for _, v in curve], label=label)
            drawn += 1
    ax.set_xlabel("training step")
    ax.set_ylabel("mean reward")
    ax.set_title("training reward")
    if drawn:
        ax.legend(fontsize="small")
    _save(fig, path)
    return drawn


def judge_agreement(reports: Sequence[dict[str, Any]], path: Path) -> int:
    """Horizontal bars: each judge pair's, and each judge's agreement with the rule metric, percent agreement
    and Cohen's κ with their bootstrap intervals; two series."""
    plt = _pyplot()
    labels: list[str] = []
    series: dict[str, list[Any]] = {"percent agreement": [], "Cohen κ": []}
    for report in reports:
        for pair in report.get("pairwise", []):
            labels.append(f"{report['task']}: {pair['a']} vs {pair['b']}")
            series["percent agreement"].append(pair["percent_agreement"])
            series["Cohen κ"].append(pair["cohen_kappa"])
        for pair in report.get("vs_rule", []):
            labels.append(f"{report['task']}: {pair['rater']} vs {pair['reference']}")
            series["percent agreement"].append(pair["percent_agreement"])
            series["Cohen κ"].append(pair["cohen_kappa"])
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.6 * max(1, len(labels))))
    height = 0.4
    for i, (name, estimates) in enumerate(series.items()):
        ys = [k + (i - 0.5) * height for k in range(len(labels))]
        values = [0.0 if math.isnan(e.value) else e.value for e in estimates]
        bounds = [_err(e.value, e.low, e.high) if not math.isnan(e.value) else (0.0, 0.0) for e in estimates]
        errs = [[b[0] for b in bounds], [b[1] for b in bounds]]
        ax.barh(ys, values, height, xerr=errs, capsize=2, label=name)
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.set_xlim(min(0.0, ax.get_xlim()[0]), 1.05)
    ax.set_xlabel("agreement (95% bootstrap interval)")
    ax.legend(fontsize="small")
    _save(fig, path)
    return len(series)


def board_plots(board: Board, folder: Path) -> list[Path]:
    """Every plot the board has data for: bars always; shots where rows have method + shots; reward curves
    where rows come from training runs with logs."""
    folder.mkdir(parents=True, exist_ok=True)
    name = board.spec.name
    written = [folder / f"{name}-bars.png"]
    bars(board, written[0])
    if any(r.method is not None and r.shots is not None for r in board.rows):
        written.append(folder / f"{name}-shots.png")
        shots(board, written[-1])
    dirs = training_dirs(board)
    if dirs and any(reward_curve(d) for d in dirs.values()):
        written.append(folder / f"{name}-rewards.png")
        reward_curves(dirs, written[-1])
    return written
