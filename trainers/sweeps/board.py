"""The sweep's leaderboard: one row per (recipe, preset, shots) with mean +- std over seeds of each eval
task's primary metric, the base model's reference row and the baselines, each with its lineage.

A pure function of the sweep's folders: results are read from each run directory's typed run log through
`medharness.runs.folders.task_result`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medharness.core.stats import seed_summary
from medharness.runs.folders import SweepDir, task_result
from medharness.trainers.sweeps.schema import Cell, SweepConfig, all_eval_tasks, eval_tasks


def stats(found: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Mean, sample std and a 95% interval over the runs `task_result` found (seeds of one row): the t
    interval over seeds (medharness.core.stats.seed_summary) from two runs on, a single run's own interval."""
    got = [g for g in found if g and g["value"] is not None]
    values = [g["value"] for g in got]
    if not values:
        return {"mean": None, "std": None, "n": 0, "low": None, "high": None, "ci_method": None}
    if len(values) == 1:
        low, high = got[0]["ci"] or (None, None)
        return {"mean": values[0], "std": None, "n": 1, "low": low, "high": high,
                "ci_method": got[0]["ci_method"]}

    mean, std, interval = seed_summary(values)
    return {"mean": mean, "std": std, "n": len(values), "low": interval.low, "high": interval.high,
            "ci_method": f"{interval.method} (n={len(values)})"}


def cell_text(stats: dict[str, Any], n_expected: int, digits: int = 1) -> str:
    """`58.0 ± 1.2 [55.0, 61.0]`: mean ± std over seeds [95% interval]; `(i/n)` when seeds are missing."""
    if stats["mean"] is None:
        return "n/a"
    text = (f"{stats['mean']:.{digits}f}"
            + (f" ± {stats['std']:.{digits}f}" if stats["std"] is not None else ""))
    if stats.get("low") is not None and stats.get("high") is not None and not math.isnan(stats["low"]):
        text += f" [{stats['low']:.{digits}f}, {stats['high']:.{digits}f}]"
    text += " (oracle floor)" if stats.get("oracle") else ""
    return text if stats["n"] >= n_expected else f"{text} ({stats['n']}/{n_expected})"


INTERVALS = ("[95% interval]: over two or more seeds the t interval of their mean (t-seeds); for a single "
             "run, that run's own interval (its method in sweep.json: clustered bootstrap or Wilson)")


def _chain(cell: Cell, by_id: dict[str, Cell]) -> str:
    parts = []
    node: Cell | None = cell
    while node is not None:
        parts.append(node.entry.recipe + (f"[{node.preset}]" if node.preset else ""))
        node = by_id.get(node.parent) if node.parent else None
    return " → ".join(reversed(parts))


def board(sweep: SweepConfig, cells: Sequence[Cell], folder: SweepDir, references: dict[str, str | None],
          base_label: str) -> list[dict[str, Any]]:
    """Rows of the leaderboard (dicts, also written to sweep.json), read from the sweep's run directories."""
    tasks = all_eval_tasks(sweep)
    rows: list[dict[str, Any]] = []
    for name, model in references.items():
        row: dict[str, Any] = {"row": name, "kind": "reference",
                               "lineage": model or f"{base_label} (no training)", "tasks": {}}
        for task in tasks:
            got = task_result(folder.reference_dir(name, task), task)
            row["tasks"][task] = {"metric": got and got["metric"], "oracle": bool(got and got["oracle"]),
                                  **stats([got])}
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
            found = [task_result(folder.eval_dir(c.id, task), task) for c in members
                     if task in eval_tasks(sweep, c)]
            metric = next((g["metric"] for g in found if g and g["value"] is not None), None)
            row["tasks"][task] = {"metric": metric, **stats(found)}
        rows.append(row)
    return rows


def render_markdown(rows: Sequence[dict[str, Any]], tasks: Sequence[str], title: str | None = None) -> str:
    """The board as Markdown: mean ± std over seeds [95% interval] of each task's primary metric (x100 for
    percents)."""
    from tabulate import tabulate

    metrics = {t: next((r["tasks"][t]["metric"] for r in rows if r["tasks"].get(t, {}).get("metric")), None)
               for t in tasks}
    headers = ["row", *(f"{t} ({metrics[t]})" if metrics[t] else t for t in tasks), "lineage"]
    table = []
    for r in rows:
        n_expected = 1 if r["kind"] == "reference" else len(r["seeds"])
        table.append([r["row"], *(cell_text(r["tasks"][t], n_expected) for t in tasks), r["lineage"]])
    lines = [f"# {title}", ""] if title else []
    lines.append(tabulate(table, headers=headers, tablefmt="github"))
    lines += ["", ("Cells: mean ± sample std over seeds of the task's primary metric (x100 for percentages); "
                   f"{INTERVALS}; (i/n) = only i of n seeds finished; n/a = no finished run; (oracle floor) "
                   "= a baseline that, without a train split or card prior, drew its answers from the "
                   "evaluated split's own golds.")]
    return "\n".join(lines) + "\n"

