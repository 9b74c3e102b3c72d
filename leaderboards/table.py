"""A board's table: rows, columns, cells (`Value`s) and the marks of paired comparisons with the reference
row."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from medharness.leaderboards.columns import Column
from medharness.leaderboards.spec import BoardSpec
from medharness.runs.results import MISSING, Value
from medharness.runs.runlog import RunDir


@dataclass
class Row:
    label: str
    runs: list[RunDir]
    lineage: str = ""
    kind: str = "run"  # run | published | delta
    published: dict[str, float] | None = None
    source: str | None = None
    method: str | None = None
    shots: int | None = None
    task: str | None = None  # the task of the columns that name none
    blank: tuple[str, ...] = ()  # columns this row does not measure
    expected: int | None = None  # runs per column it waits for (seeds)

    def column_for(self, col: Column) -> Column | None:
        """The column as this row reads it: a column that names no task takes the row's task (else the task
        of its runs when they have one); None where the row leaves it blank or has no task for it."""
        if col.label in self.blank:
            return None
        if col.task:
            return col
        tasks = {self.task} if self.task else {t for run in self.runs for t in run.log.tasks}
        return replace(col, task=tasks.pop()) if len(tasks) == 1 else None


@dataclass(frozen=True)
class Mark:
    """A row's paired comparison with the reference in one column: difference (display scale), interval,
    raw and corrected p-value, test."""

    diff: float
    low: float | None
    high: float | None
    p_value: float
    p_adjusted: float
    test: str
    n: int
    significant: bool


@dataclass
class Board:
    spec: BoardSpec
    columns: list[Column]
    rows: list[Row]
    cells: dict[tuple[str, str], Value] = field(default_factory=dict)
    marks: dict[tuple[str, str], Mark] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    conventions: dict[str, str] = field(default_factory=dict)  # task -> convention(s) of the shown runs

    def cell(self, row: str, column: str) -> Value:
        return self.cells.get((row, column), MISSING)
