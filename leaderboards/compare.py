"""Rows against rows on the same samples: significance marks against the reference row (a paired test per
column, Holm-corrected over the rows compared with the reference) and delta rows (`row - minus`, with the
paired interval where both rows are single runs). The tests are `medharness.core.stats.paired_compare`."""

from __future__ import annotations

import math
from typing import NamedTuple

from medharness.leaderboards.columns import Column
from medharness.leaderboards.samples import RowCache
from medharness.leaderboards.table import Board, Mark, Row
from medharness.runs.results import MISSING, Value


class Pair(NamedTuple):
    diff: float  # other - reference, on the display scale
    low: float | None
    high: float | None
    p_value: float  # NaN: no test applies (e.g. every difference the same nonzero value)
    n: int
    test: str


def _row(board: Board, label: str, what: str) -> Row | None:
    """The row labelled `label`; None (with a note) for a row of the spec whose runs are not made yet; a label
    that no row has is an error."""
    for row in board.rows:
        if row.label == label:
            return row
    if label in {r.label for r in board.spec.rows}:
        _note(board, f"{what} {label!r} has no finished run yet: left out")
        return None
    from medharness.core.errors import ConfigError

    raise ConfigError(f"board {board.spec.name!r}: {what} {label!r} is not a row label "
                      f"(rows: {', '.join(r.label for r in board.rows)})")


def paired(board: Board, ref: Row, other: Row, col: Column, cache: RowCache) -> Pair | None:
    """`other - ref` on the samples both scored, on the display scale, or None where no
    paired test applies (not single runs, a judge or corpus metric, other task versions, no shared
    samples)."""
    if len(ref.runs) != 1 or len(other.runs) != 1 or col.judge or col.metric == "average":
        return None
    own, theirs = ref.column_for(col), other.column_for(col)
    if own is None or theirs is None or own.task != theirs.task:
        return None
    col = own
    a_run, b_run = ref.runs[0], other.runs[0]
    a_entry, b_entry = a_run.log.tasks.get(col.task), b_run.log.tasks.get(col.task)
    metric = col.metric_of(a_run)
    if a_entry is None or b_entry is None or metric is None or metric != col.metric_of(b_run):
        return None
    if a_entry.version != b_entry.version:
        _note(board, f"{col.label}: {other.label} (task version {b_entry.version}) is not compared with "
                     f"{ref.label} (version {a_entry.version})")
        return None
    a = cache.scores(a_run, col.task, metric, col.group)
    b = cache.scores(b_run, col.task, metric, col.group)
    shared = sorted(set(a.values) & set(b.values))
    if len(shared) < 2:
        return None
    if len(shared) < max(len(a.values), len(b.values)):
        _note(board, f"{col.label}: {other.label} and {ref.label} are compared on the {len(shared)} samples "
                     f"both scored ({len(a.values)} and {len(b.values)} scored)")
    from medharness.core.stats import paired_compare

    result = paired_compare({i: a.values[i] for i in shared}, {i: b.values[i] for i in shared},
                            {i: a.clusters[i] for i in shared}, binary=a.binary and b.binary)
    scale = 100.0 if col.percent else 1.0
    p = math.nan if result.p_value is None else result.p_value
    return Pair(result.diff * scale, _scaled(result.low, scale), _scaled(result.high, scale), p, result.n,
                result.test)


def _note(board: Board, text: str) -> None:
    if text not in board.notes:
        board.notes.append(text)


def _scaled(x: float | None, scale: float) -> float | None:
    return None if x is None else x * scale


def add_marks(board: Board, cache: RowCache) -> None:
    """Each row's paired comparison with the reference, per column; p-values Holm-corrected over the rows of a
    column (`significance.correction`), a mark where the corrected p is below `significance.alpha`."""
    from medharness.core.stats import holm

    ref = _row(board, str(board.spec.reference), "reference row")
    if ref is None:
        return
    sig = board.spec.significance
    for col in board.columns:
        found: dict[str, Pair] = {}
        for row in board.rows:
            if row is not ref and row.runs:
                got = paired(board, ref, row, col, cache)
                if got is not None:
                    found[row.label] = got
        if not found:
            continue
        tested = [label for label, v in found.items() if not math.isnan(v.p_value)]
        raw = [found[label].p_value for label in tested]
        corrected = holm(raw) if sig is None or sig.correction == "holm" else raw
        adjusted = dict(zip(tested, corrected, strict=True))
        alpha = sig.alpha if sig is not None else 0.05
        for label, pair in found.items():
            p_adj = adjusted.get(label, math.nan)
            board.marks[(label, col.label)] = Mark(pair.diff, pair.low, pair.high, pair.p_value, p_adj,
                                                   pair.test, pair.n, sig is not None and p_adj < alpha)


def add_deltas(board: Board, cache: RowCache) -> None:
    """Delta rows after the rows they compare: `row - minus` per column (paired interval where it applies)."""
    for delta in board.spec.deltas:
        top, bottom = _row(board, delta.row, "delta row"), _row(board, delta.minus, "delta minus")
        if top is None or bottom is None:
            continue
        label = delta.label or f"Δ {top.label} − {bottom.label}"
        row = Row(label, [], f"{top.label} minus {bottom.label}", kind="delta")
        for col in board.columns:
            a, b = board.cell(bottom.label, col.label), board.cell(top.label, col.label)
            got = paired(board, bottom, top, col, cache)
            if got is not None:
                board.cells[(label, col.label)] = Value(got.diff, got.low, got.high, n=got.n,
                                                        method=f"paired: {got.test}")
            elif a.value is not None and b.value is not None:
                board.cells[(label, col.label)] = Value(b.value - a.value)
            else:
                board.cells[(label, col.label)] = MISSING
        board.rows.insert(board.rows.index(top) + 1, row)
