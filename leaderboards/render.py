"""A `Board` as Markdown (tabulate, paper style), CSV or JSON.

Markdown: rows x columns; in each column the best value is bold and the second underlined (by the metric's
direction; delta rows and the reference row's comparisons are not ranked); `†` marks a row that differs from
the reference row by a paired test (Holm-corrected p below alpha); delta rows show signed differences. Under
the table: unparsed answers per row and task, the legend (conventions, how intervals were made), notes
(skipped folders, failed runs) and the caption. CSV and JSON carry every number with its interval, method and
test.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from tabulate import tabulate

from medharness.core.display import md_text, plain
from medharness.leaderboards.columns import Column
from medharness.leaderboards.runs import ORACLE
from medharness.leaderboards.table import Board, Row
from medharness.runs.results import Value


def _num(x: float | None, decimals: int, signed: bool = False) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"


def cell_text(v: Value, decimals: int, intervals: bool, signed: bool = False) -> str:
    """`58.0 [53.1, 62.9]`, `58.0 ± 1.2 [55.0, 61.0]` over seeds, `+3.1 [0.4, 5.9]` for a delta."""
    if v.value is None or math.isnan(v.value):
        return "n/a"
    text = _num(v.value, decimals, signed)
    if v.std is not None and not math.isnan(v.std):
        text += f" ± {v.std:.{decimals}f}"
    if intervals and v.low is not None and v.high is not None and not math.isnan(v.low):
        text += f" [{_num(v.low, decimals, signed)}, {_num(v.high, decimals, signed)}]"
    return text


def _ranks(board: Board, col: Column) -> dict[str, int]:
    """Rank 1 (best) and 2 (second) among the ranked rows of a column, on the values as shown (rounded); ties
    share a rank."""
    shown = {r.label: round(v, board.spec.decimals) for r in board.rows
             if r.kind != "delta" and (v := board.cell(r.label, col.label).value) is not None
             and not math.isnan(v)}
    values = sorted(set(shown.values()), reverse=col.higher_is_better)
    if len(values) < 2:
        return {}
    return {label: values.index(v) + 1 for label, v in shown.items() if v in values[:2]}


def _styled(text: str, rank: int | None) -> str:
    if rank is None or text == "n/a":
        return text
    head, sep, tail = text.partition(" ")
    head = f"**{head}**" if rank == 1 else f"<u>{head}</u>"
    return head + sep + tail


def _missing_runs(board: Board, row: Row, col: Column) -> bool:
    """A cell of fewer finished runs than its row waits for (seeds)."""
    value = board.cell(row.label, col.label)
    return (row.expected is not None and not value.missing and value.n_runs < row.expected
            and col.metric != "average")


def table_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    spec = board.spec
    ranks = {c.label: _ranks(board, c) for c in board.columns}
    headers = ["row", *(c.label for c in board.columns), "lineage"]
    body = []
    for row in board.rows:
        cells = []
        for col in board.columns:
            value = board.cell(row.label, col.label)
            text = cell_text(value, spec.decimals, spec.intervals, row.kind == "delta")
            text = _styled(text, ranks[col.label].get(row.label) if row.kind != "delta" else None)
            if _missing_runs(board, row, col):
                text += f" ({value.n_runs}/{row.expected})"
            mark = board.marks.get((row.label, col.label))
            cells.append(text + (" †" if mark is not None and mark.significant else ""))
        body.append([md_text(row.label), *cells, md_text(row.lineage)])
    return [md_text(h) for h in headers], body


def _unparsed(board: Board) -> str | None:
    tasks = list(dict.fromkeys([*(c.task for c in board.columns if c.task and not c.judge),
                                *(r.task for r in board.rows if r.task and r.runs)]))
    body = []
    for row in board.rows:
        if not row.runs:
            continue
        cells = []
        for task in tasks:
            counts = [(e.summary.n_unparsed, e.summary.n_errors, e.summary.n) for run in row.runs
                      if (e := run.log.tasks.get(task)) is not None and e.summary is not None]
            cells.append(" + ".join(f"{u}/{n}" + (f" ({err} failed)" if err else "") for u, err, n in counts))
        body.append([md_text(row.label), *cells])
    if not body or not tasks:
        return None
    return ("Unparsed answers (counted as wrong, failed generations among them) / samples:\n\n"
            + tabulate(body, headers=["row", *map(md_text, tasks)], tablefmt="github"))


def _legend(board: Board) -> str:
    methods = sorted({v.method for v in board.cells.values() if v.method})
    parts = ["Cells: value (x100 for rates)"]
    if board.spec.intervals:
        parts.append(" [95% interval]; intervals: " + ("; ".join(methods) if methods else "none available"))
    if any(_missing_runs(board, row, col) for row in board.rows for col in board.columns):
        parts.append("; (i/n): only i of the row's n runs (seeds) finished")
    if any(r.kind == "published" for r in board.rows):
        parts.append("; published rows: the paper's numbers as printed (no interval, not re-scored here)")
    if any(v.std is not None for v in board.cells.values()):
        parts.append("; several runs (seeds) of one row: mean ± sample std [t interval of the mean over "
                     "seeds]")
    parts.append(". Best in bold, second underlined.")
    if board.conventions:
        parts.append(" Conventions: " + "; ".join(f"{t}: {c}" for t, c in sorted(board.conventions.items()))
                     + ".")
    if any(c.judge for c in board.columns):
        parts.append(" judge:NAME:FIELD = one LLM judge's mean verdict; panel:SPEC:FIELD:majority|mean = the "
                     "panel's per-sample majority (ties unscored) or mean; unscored verdicts are left out.")
    if any(r.label.endswith(ORACLE) for r in board.rows):
        parts.append(f" '{ORACLE.strip()}': a baseline without a train split or card prior, whose answers "
                     "come from the golds of the very split it is scored on; no floor a model could reach by "
                     "knowing the training data (run.json: tasks.TASK.baseline).")
    if any(c.label == "Average" for c in board.columns):
        parts.append(" Average: mean of the row's columns (shown when all are present; no interval).")
    if board.spec.reference is not None and board.marks:
        sig = board.spec.significance
        what = "Holm-corrected" if sig is None or sig.correction == "holm" else "uncorrected"
        if sig is not None:
            parts.append(f" † = differs from {md_text(board.spec.reference)} by a paired test on the same "
                         f"samples ({what} p < {sig.alpha:g}; exact or clustered McNemar for 0/1 metrics, "
                         "paired t on cluster totals otherwise).")
    if any(r.kind == "delta" for r in board.rows):
        parts.append(" Δ rows: difference of two rows (paired bootstrap interval on shared samples where "
                     "both are single runs).")
    return "".join(parts)


def render_markdown(board: Board) -> str:
    headers, body = table_rows(board)
    parts = [f"# {board.spec.title}"] if board.spec.title else []
    parts.append(tabulate(body, headers=headers, tablefmt="github", disable_numparse=True))
    unparsed = _unparsed(board)
    if unparsed:
        parts.append(unparsed)
    parts.append(_legend(board))
    sources = list(dict.fromkeys(r.source for r in board.rows if r.source))
    if board.spec.caption or sources:
        parts.append(" ".join([board.spec.caption or "", *(f"Published: {s}." for s in sources)]).strip())
    if board.notes:
        parts.append("Notes:\n" + "\n".join(f"- {md_text(n)}" for n in board.notes))
    return "\n\n".join(parts) + "\n"


def records(board: Board) -> list[dict[str, Any]]:
    """One record per (row, column): the long shape of CSV and JSON."""
    out = []
    for row in board.rows:
        for col in board.columns:
            v = board.cell(row.label, col.label)
            mark = board.marks.get((row.label, col.label))
            out.append({
                "row": row.label, "kind": row.kind, "column": col.label,
                "task": (own.task if (own := row.column_for(col)) else col.task or row.task) or None,
                "metric": col.metric or _metric(row, col), "group_field": col.group[0] if col.group else None,
                "group": col.group[1] if col.group else None, "judge": col.judge, "value": v.value,
                "ci_low": v.low, "ci_high": v.high, "ci_method": v.method, "n": v.n,
                "n_clusters": v.n_clusters, "std": v.std, "n_runs": v.n_runs if row.runs else 0,
                "vs_reference_diff": mark and mark.diff, "vs_reference_p": mark and mark.p_value,
                "vs_reference_p_holm": mark and mark.p_adjusted, "vs_reference_test": mark and mark.test,
                "significant": mark.significant if mark else None, "lineage": row.lineage,
                "runs": ";".join(str(r.path) for r in row.runs),
            })
    return out


def _metric(row: Row, col: Column) -> str | None:
    own = row.column_for(col)
    return own.metric_of(row.runs[0]) if row.runs and own else None


def _clean(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def render_csv(board: Board) -> str:
    buf = io.StringIO()
    rows = records(board)
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["row"], lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if _clean(v) is None else plain(v) if isinstance(v, str) else v  # no ANSI escape
                       for k, v in r.items()} for r in rows])
    return buf.getvalue()


def render_json(board: Board) -> str:
    data = {"board": board.spec.name, "title": board.spec.title, "reference": board.spec.reference,
            "columns": [c.label for c in board.columns], "rows": [r.label for r in board.rows],
            "conventions": board.conventions, "notes": board.notes,
            "cells": [{k: _clean(v) for k, v in r.items()} for r in records(board)]}
    return json.dumps(data, indent=2) + "\n"


FORMATS = {"md": render_markdown, "csv": render_csv, "json": render_json}
