"""The sweep's leaderboard: one row per (recipe, preset, shots) with mean +- std over seeds of each eval task's
primary metric, the base model's reference row and the baselines, each with its lineage.

A pure function of the sweep's folders: results are read from each run directory's typed run log
(`medharness.runlog`) through `read_run` / `primary_metric`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.errors import DataError
from medharness.records import RunLog
from medharness.runlog import RunDir
from medharness.trainers.sweep import Cell, SweepConfig, all_eval_tasks, eval_tasks


def read_run(run_dir: Path) -> RunLog | None:
    """A run directory's run log, None when there is none (or it cannot be read: a stage to run again)."""
    try:
        return RunDir.open(run_dir).log
    except (DataError, OSError):
        return None


def primary_metric(run_dir: Path, task: str, metric: str | None = None) -> dict[str, Any] | None:
    """{metric, value (x100 for percent metrics), n, model} of a finished run's task: the task's first metric
    (or the metric labelled `metric`); None when the run, the task's summary or that metric is missing."""
    runlog = read_run(run_dir)
    if runlog is None or runlog.status != "finished":
        return None
    entry = runlog.tasks.get(task)
    if entry is None or entry.summary is None or not entry.summary.metrics:
        return None
    metrics = entry.summary.metrics
    if metric is not None and metric not in metrics:
        return None
    name = metric or next(iter(metrics))
    m = metrics[name]
    value = None if math.isnan(m.value) else m.value * (100.0 if entry.percent.get(name, True) else 1.0)
    return {"metric": name, "value": value, "n": m.n, "model": runlog.model}


def stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _cell_text(stats: dict[str, Any], n_expected: int) -> str:
    if stats["mean"] is None:
        return "n/a"
    text = f"{stats['mean']:.1f}" + (f" ± {stats['std']:.1f}" if stats["std"] is not None else "")
    return text if stats["n"] == n_expected else f"{text} ({stats['n']}/{n_expected})"


def _chain(cell: Cell, by_id: dict[str, Cell]) -> str:
    parts = []
    node: Cell | None = cell
    while node is not None:
        parts.append(node.entry.recipe + (f"[{node.preset}]" if node.preset else ""))
        node = by_id.get(node.parent) if node.parent else None
    return " → ".join(reversed(parts))


def board(sweep: SweepConfig, cells: Sequence[Cell], eval_dir: Any, reference_dir: Any,
          references: dict[str, str | None], base_label: str) -> list[dict[str, Any]]:
    """Rows of the leaderboard (dicts, also written to sweep.json). `eval_dir(cell_id, task)` and
    `reference_dir(name, task)` locate the run directories."""
    tasks = all_eval_tasks(sweep)
    rows: list[dict[str, Any]] = []
    for name, model in references.items():
        row: dict[str, Any] = {"row": name, "kind": "reference", "lineage": model or f"{base_label} (no training)",
                               "tasks": {}}
        for task in tasks:
            got = primary_metric(reference_dir(name, task), task)
            row["tasks"][task] = {"metric": got and got["metric"],
                                  **stats([got["value"]] if got and got["value"] is not None else [])}
        rows.append(row)
    by_id = {c.id: c for c in cells}
    groups: dict[tuple[str, str | None, int | None], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.entry.key, cell.preset, cell.shots), []).append(cell)
    for (key, preset, shots), members in groups.items():
        shots_text = "all" if shots is None else f"{shots}/class"
        row = {"row": key + (f" [{preset}]" if preset else "") + f" · k={shots_text}", "kind": "trained",
               "recipe": members[0].entry.recipe, "entry": key, "preset": preset, "shots": shots,
               "seeds": sorted(c.seed for c in members), "cells": [c.id for c in members],
               "lineage": f"{base_label} → {_chain(members[0], by_id)} · k={shots_text} · "
                          f"{len(members)} seed{'s' if len(members) != 1 else ''} "
                          f"({', '.join(str(c.seed) for c in members)})",
               "tasks": {}}
        for task in tasks:
            values, metric = [], None
            for cell in members:
                if task not in eval_tasks(sweep, cell):
                    continue
                got = primary_metric(eval_dir(cell.id, task), task)
                if got and got["value"] is not None:
                    values.append(got["value"])
                    metric = got["metric"]
            row["tasks"][task] = {"metric": metric, **stats(values)}
        rows.append(row)
    return rows


def render_markdown(rows: Sequence[dict[str, Any]], tasks: Sequence[str], title: str | None = None) -> str:
    """The board as Markdown: mean ± std over seeds of each task's primary metric (x100 for percents)."""
    from tabulate import tabulate

    metrics = {t: next((r["tasks"][t]["metric"] for r in rows if r["tasks"].get(t, {}).get("metric")), None)
               for t in tasks}
    headers = ["row", *(f"{t} ({metrics[t]})" if metrics[t] else t for t in tasks), "lineage"]
    table = []
    for r in rows:
        n_expected = 1 if r["kind"] == "reference" else len(r["seeds"])
        table.append([r["row"], *(_cell_text(r["tasks"][t], n_expected) for t in tasks), r["lineage"]])
    lines = [f"# {title}", ""] if title else []
    lines.append(tabulate(table, headers=headers, tablefmt="github"))
    lines += ["", ("Cells: mean ± sample std over seeds of the task's primary metric (x100 for percentages); "
                   "(i/n) = only i of n seeds finished; n/a = no finished run.")]
    return "\n".join(lines) + "\n"

