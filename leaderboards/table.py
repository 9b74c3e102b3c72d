"""A board's table: rows, columns, cells (`Value`s) and the marks of paired comparisons with the reference
row."""

from __future__ import annotations

from dataclasses import dataclass, field

from medharness.leaderboards.columns import Column
from medharness.leaderboards.runs import MISSING, Value
from medharness.leaderboards.spec import BoardSpec
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
