"""A board spec + run directories -> a `Board`: rows x columns of `Value`s with intervals, the Average column,
delta rows and significance marks against the reference row (`compare.py`). Rendering: `render.py`; plots:
`plots.py`.

A row of one run shows the run log's value and interval. A row of several runs (seeds of one configuration)
shows their mean with the sample standard deviation and the pooled interval of
`medharness.core.stats.seed_summary`. A group cell (e.g. answer_type = CLOSED) is computed from the run's
rows, with the interval a summary gets (Wilson, or a bootstrap clustered by image). Significance: a paired
test on the samples both runs scored (`medharness.core.stats.paired_compare`: exact or clustered McNemar for
0/1 metrics, else a paired t-test on cluster totals), Holm-corrected over the rows of each column.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Sequence
from pathlib import Path

from medharness.core.errors import ConfigError, DataError
from medharness.leaderboards.columns import Column, resolve_columns
from medharness.leaderboards.compare import add_deltas, add_marks
from medharness.leaderboards.runs import ORACLE, Opened, is_oracle, lineage_text, open_runs, unique_labels
from medharness.leaderboards.samples import RowCache
from medharness.leaderboards.spec import BoardSpec, RowSpec
from medharness.leaderboards.table import Board, Row
from medharness.runs.folders import SweepDir, TrainDir
from medharness.runs.results import MISSING, Value, over_runs
from medharness.runs.runlog import RUN_FILE

N_BOOT = 2000
SEED = 0


def _expand(pattern: str) -> list[Path]:
    """A path or glob -> paths; of a glob's matches, the run directories (a glob may catch a `logs/`
    folder)."""
    found = [Path(p) for p in sorted(glob.glob(pattern))]
    runs = [p for p in found if (p / RUN_FILE).is_file()]
    return runs or found or [Path(pattern)]


def _row_paths(spec: RowSpec) -> list[Path]:
    if spec.run:
        return [Path(spec.run)]
    if spec.runs:
        return [p for pattern in spec.runs for p in _expand(pattern)]
    if spec.sweep and spec.cell:
        root = Path(spec.sweep)
        if spec.cell.startswith("reference/"):
            return _expand(str(root / spec.cell / "*"))
        return _expand(SweepDir(root).cell_runs(spec.cell))
    if spec.checkpoint is not None and spec.step is not None:  # the spec requires both together
        return [TrainDir(Path(spec.checkpoint)).eval_dir(spec.step)]
    return []


def build_rows(spec: BoardSpec, run_dirs: Sequence[Path]) -> tuple[list[Row], Opened]:
    """The spec's rows, then one row per RUNS path; every run folder is opened with `open_runs` (non-run
    folders skipped with a note, failed runs left out and listed)."""
    everything = Opened()
    rows: list[Row] = []
    for row_spec in spec.rows:
        if row_spec.published is not None:
            rows.append(Row(str(row_spec.label), [], row_spec.lineage or "published",
                            "published", dict(row_spec.published), row_spec.source,
                            row_spec.method, row_spec.shots, row_spec.task))
            continue
        opened = open_runs(_row_paths(row_spec), missing_ok=True)
        _merge(everything, opened)
        if not opened.runs:
            everything.notes.append(f"row {row_spec.label or _row_paths(row_spec)[0]}: no finished run yet")
            continue
        first = unique_labels(opened.runs)[0]
        label = row_spec.label or (first if len(opened.runs) == 1
                                   else f"{first} (+{len(opened.runs) - 1} runs)")
        if row_spec.label and any(is_oracle(run) for run in opened.runs):
            label += ORACLE  # as a run's own label is (unique_labels)
        lineage = row_spec.lineage or " | ".join(dict.fromkeys(lineage_text(r.log) for r in opened.runs))
        rows.append(Row(label, opened.runs, lineage, method=row_spec.method, shots=row_spec.shots,
                        task=row_spec.task, blank=tuple(row_spec.blank), expected=row_spec.expected))
    opened = open_runs(run_dirs)
    _merge(everything, opened)
    for run, label in zip(opened.runs, unique_labels(opened.runs), strict=True):
        rows.append(Row(label, [run], lineage_text(run.log)))
    seen: set[str] = set()
    for row in rows:
        if row.label in seen:
            raise ConfigError(f"two rows of board {spec.name!r} are labelled {row.label!r}: give them labels")
        seen.add(row.label)
    return rows, everything


def _merge(into: Opened, more: Opened) -> None:
    into.skipped += more.skipped
    into.failed += more.failed
    into.notes += more.notes


def build(spec: BoardSpec, run_dirs: Sequence[Path] = ()) -> Board:
    rows, opened = build_rows(spec, run_dirs)
    if not any(r.runs or r.published for r in rows):
        raise DataError("no run to show" + (": " + "; ".join(opened.messages()) if opened.messages() else ""))
    runs = [run for row in rows for run in row.runs]
    board = Board(spec, resolve_columns(spec, runs), rows, notes=opened.messages())
    if not board.columns:
        raise DataError("no finished task summaries in the given run directories")
    labels = {c.label for c in board.columns} | ({spec.average_label} if spec.average else set())
    for row in rows:
        unknown = sorted(set(row.published or {}) - labels)
        if unknown:
            raise ConfigError(f"board {spec.name!r}: published row {row.label!r} names no column {unknown} "
                              f"(columns: {', '.join(sorted(labels))})")
    cache = RowCache()
    for row in rows:
        for col in board.columns:
            board.cells[(row.label, col.label)] = _value(row, col, cache)
    for run in runs:
        for task, entry in run.log.tasks.items():
            if entry.summary is not None:
                conventions = set(board.conventions.get(task, "").split(", ")) - {""}
                board.conventions[task] = ", ".join(sorted(conventions | {entry.summary.convention}))
    if spec.average:
        _add_average(board, spec.average_label, spec.average_of)
    if spec.reference is not None:
        add_marks(board, cache)
    if spec.deltas:
        add_deltas(board, cache)
    return board


def _value(row: Row, col: Column, cache: RowCache) -> Value:
    if row.published is not None:
        got = row.published.get(col.label)
        return MISSING if got is None else Value(got, method=None)
    own = row.column_for(col)
    return MISSING if own is None else over_runs([own.value(run, cache) for run in row.runs])


def _add_average(board: Board, label: str = "Average", of: Sequence[str] = ()) -> None:
    """The mean of a row's columns (`of`: these labels; each column weighted equally), shown only when every
    one has a value. It carries no interval: its columns' intervals are not independent of each other."""
    unknown = sorted(set(of) - {c.label for c in board.columns})
    if unknown:
        raise ConfigError(f"the {label!r} column averages columns the board does not have: {unknown}")
    columns = [c for c in board.columns if not of or c.label in of]
    avg = Column(label=label, task="", metric="average", higher_is_better=True)
    board.columns.append(avg)
    for row in board.rows:
        if row.published is not None and label in row.published:
            board.cells[(row.label, label)] = Value(row.published[label])
            continue
        values = [board.cell(row.label, c.label).value for c in columns]
        if values and all(v is not None and not math.isnan(v) for v in values):
            board.cells[(row.label, label)] = Value(sum(v for v in values if v is not None) / len(values))
