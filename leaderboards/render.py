"""Leaderboards: a pure function of run directories -> a Markdown table of models x tasks.

Each cell is the task's primary metric (its first) with a 95% normal interval (1.96 x standard
error); unparsed answers count as wrong and are reported in the `unparsed` table. Judged runs add a
column per judge and per panel aggregate (each judge spec's primary verdict field; see
`medharness.judges.summary`) beside the rule-based metric: unscored verdicts are left out of their mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from medharness.errors import DataError
from medharness.records import RunLog
from medharness.runlog import RunDir

ORACLE = " (oracle floor)"  # a baseline that drew its answers from the evaluated split's own golds


def _model_label(runlog: RunLog) -> str:
    model = str(runlog.config.get("model", runlog.model or "?"))
    if model.startswith("baseline:"):
        return model
    return Path(model).name or model


def collect(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """One row per (run, task, metric) with value, stderr, n, n_unparsed, convention."""
    records: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        runlog = RunDir.open(Path(run_dir)).log
        base: dict[str, Any] = {"run": runlog.run_id, "model": _model_label(runlog), "status": runlog.status}
        for task, entry in runlog.tasks.items():
            summary = entry.summary
            if summary is None:
                continue
            oracle = entry.baseline is not None and entry.baseline.kind == "oracle"
            row = {**base, "model": f"{base['model']}{ORACLE if oracle else ''}", "oracle": oracle}
            for rank, (metric, m) in enumerate(summary.metrics.items()):
                scale = 100.0 if entry.percent.get(metric, True) else 1.0
                records.append({
                    **row, "task": task, "metric": metric, "primary": rank == 0,
                    "value": None if math.isnan(m.value) else m.value * scale,
                    "stderr": None if m.stderr is None else m.stderr * scale,
                    "n": m.n, "n_unparsed": m.n_unparsed, "convention": summary.convention,
                    "judge": False, "judge_primary": False,
                })
            for column, c in (entry.judges.columns if entry.judges else {}).items():
                scale = 100.0 if c.percent else 1.0
                records.append({
                    **row, "task": task, "metric": column, "primary": False,
                    "value": None if c.value is None else c.value * scale,
                    "stderr": None if c.stderr is None else c.stderr * scale,
                    "n": c.n, "n_unparsed": c.n_unscored, "convention": summary.convention,
                    "judge": True, "judge_primary": c.primary,
                })
    if not records:
        raise DataError("no finished task summaries in the given run directories")
    return pd.DataFrame.from_records(records)


def _cell(value: float | None, stderr: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if stderr is None or math.isnan(stderr):
        return f"{value:.1f}"
    return f"{value:.1f} ± {1.96 * stderr:.1f}"


def render_markdown(frame: pd.DataFrame, all_metrics: bool = False, judges: bool = True) -> str:
    """Models x tasks (primary metric unless `all_metrics`; with each judge's and panel's primary verdict
    unless not `judges`), then unparsed counts, then the legend."""
    judge = frame["judge"]
    keep = (~judge & (frame["primary"] | all_metrics)) | (judge & judges & (frame["judge_primary"] | all_metrics))
    rows = frame[keep]
    rows = rows.assign(column=rows["task"] + " · " + rows["metric"], cell=[
        _cell(v, s) for v, s in zip(rows["value"], rows["stderr"], strict=True)])
    table = rows.pivot_table(index="model", columns="column", values="cell", aggfunc="first").fillna("")
    order = rows.sort_values(["task", "judge"], kind="stable")["column"].drop_duplicates()  # rule metrics first
    table = table[[c for c in order if c in table.columns]]
    rule = rows[~rows["judge"]]
    unparsed = rule.assign(u=rule["n_unparsed"].astype(str) + "/" + rule["n"].astype(str)).pivot_table(
        index="model", columns="task", values="u", aggfunc="first").fillna("")
    by_convention = rows.groupby("convention")["task"].unique()
    conventions = [f"{conv} ({', '.join(sorted(tasks))})" for conv, tasks in by_convention.items()]
    legend = "Cells: metric value (x100 for rates) ± 1.96 × standard error. Conventions: " + "; ".join(conventions) + "."
    if rows["oracle"].any():
        legend += (f" '{ORACLE.strip()}': a baseline without a train split or card prior, whose answers come from "
                   "the golds of the very split it is scored on; it is no floor a model could reach by knowing "
                   "the training data (run.json: tasks.TASK.baseline).")
    if rows["judge"].any():
        legend += (" judge:NAME:FIELD = one LLM judge's mean verdict; panel:SPEC:FIELD:majority|mean = the "
                   "panel's per-sample majority (ties unscored) or mean; unscored verdicts are left out "
                   "(counts: `medharness judge` / run.json).")
    return "\n\n".join([
        tabulate(table, headers="keys", tablefmt="github"),
        "Unparsed answers (counted as wrong) / scored samples:",
        tabulate(unparsed, headers="keys", tablefmt="github"),
        legend,
    ]) + "\n"
