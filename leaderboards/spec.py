"""Board specs (`leaderboards/boards/*.yaml`): which rows (runs, seeds, sweep cells, checkpoints, published
numbers), which columns (task x metric, or task x group such as CLOSED / OPEN), averages, a reference row,
delta rows, intervals and significance marks. Strict like task files: an unknown key or a bad value is an
error naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from medharness.core.errors import ConfigError
from medharness.core.records import SafeName, Strict
from medharness.core.yamlio import load_strict

BOARDS = Path(__file__).resolve().parent / "boards"


class ColumnSpec(Strict):
    """One column, or one per group value: `{task: vqa_rad}` (its primary metric), `{task: vqa_rad, metric:
    vqa_accuracy, group: answer_type}` (one column per answer type), `group: answer_type=CLOSED` (one)."""

    task: str | None = Field(
        None, description="the task whose metric the column shows; none: each row's task (the row's `task`; "
                          "tasks as rows, as in RARL's Table 3), and the column needs a label")
    metric: str | None = Field(None, description="default: the task's primary metric (its first)")
    group: str | None = Field(None, description="FIELD (one column per value) or FIELD=VALUE (one column)")
    label: str | None = Field(None, description="default: \"task · metric\", \"task · VALUE\" for groups")

    @model_validator(mode="after")
    def _named(self) -> ColumnSpec:
        if self.task is None and self.label is None:
            raise ValueError("a column that names no task (each row's task) needs a label")
        return self


class RowSpec(Strict):
    """One row. Exactly one source: `run`, `runs` (several runs of one configuration, e.g. seeds: mean ± std),
    `sweep` + `cell` (a train-then-eval folder's cells, a glob over seeds; `reference/NAME` for its reference
    rows), `checkpoint` + `step` (a `train --eval-every` point), or `published` (numbers from a paper)."""

    label: str | None = Field(None, description="default: the run's label, else its run id")
    run: str | None = Field(None, description="a run directory")
    runs: list[str] = Field(default_factory=list, description="several runs of one configuration (paths or "
                                                              "globs, e.g. seeds): mean ± std")
    sweep: str | None = Field(None, description="a train-then-eval folder (with `cell`)")
    cell: str | None = Field(None, description="the sweep's cells: a glob over seeds, or reference/NAME for "
                                               "its reference rows")
    checkpoint: str | None = Field(None, description="a `train --eval-every` output folder (with `step`)")
    step: int | None = Field(None, ge=0, description="the scored step (OUTPUT/evals/step-N)")
    published: dict[str, float] | None = Field(None, description="column label -> value as published")
    source: str | None = Field(None, description="where published numbers come from (cited under the board)")
    lineage: str | None = Field(None, description="default: from the run log (base model → recipe · step · "
                                                  "seed)")
    method: str | None = Field(None, description="for plots: the series this row belongs to (accuracy "
                                                 "against shots)")
    shots: int | None = Field(None, ge=0, description="for plots: the x position")
    task: str | None = Field(None, description="the task of the columns that name none (default: a run "
                                               "row's only task)")
    blank: list[str] = Field(default_factory=list, description="column labels this row does not measure "
                                                               "(n/a)")
    expected: int | None = Field(None, ge=1, description="runs per column the row waits for (seeds): `(i/n)` "
                                                         "where fewer finished")

    @model_validator(mode="after")
    def _one_source(self) -> RowSpec:
        given = [k for k in ("run", "runs", "sweep", "checkpoint", "published") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a row has exactly one of run, runs, sweep (+ cell), checkpoint (+ step), "
                             f"published; got {', '.join(given) or 'none'}")
        if self.sweep and not self.cell:
            raise ValueError("a sweep row names its cell (a glob over seeds, or reference/NAME)")
        if self.checkpoint and self.step is None:
            raise ValueError("a checkpoint row names its step (OUTPUT/evals/step-N)")
        if (self.cell and not self.sweep) or (self.step is not None and not self.checkpoint):
            raise ValueError("`cell` goes with `sweep`, `step` with `checkpoint`")
        if self.published is not None and not self.label:
            raise ValueError("a published row needs a label")
        return self


class DeltaSpec(Strict):
    """A row of differences `row - minus` (paired intervals where both rows are single runs)."""

    row: str = Field(description="the label of the row the other is subtracted from")
    minus: str = Field(description="the label of the row subtracted")
    label: str | None = Field(None, description="default: \"Δ row − minus\"")


class SignificanceSpec(Strict):
    alpha: float = Field(0.05, gt=0, lt=1, description="a row is marked where the (corrected) p-value is "
                                                        "below this")
    correction: Literal["holm", "none"] = Field(
        "holm",
        description="holm: p-values of one column Holm-corrected over the rows compared; none: as they are")


class BoardSpec(Strict):
    name: SafeName = Field(description="the board's name (plots are NAME-bars.png, ...)")
    title: str | None = Field(None, description="the board's title")
    caption: str | None = Field(None, description="printed under the table (cite the paper of published rows "
                                                  "here)")
    columns: list[ColumnSpec] = Field(default_factory=list,
                                      description="empty: every task's primary metric in the runs (and the "
                                                  "judge columns)")
    by: str | None = Field(None, description="a group field that splits every column (e.g. answer_type)")
    all_metrics: bool = Field(
        False,
        description="with no columns: every metric, not only each task's primary one")
    judges: bool = Field(True, description="with no columns: the LLM judge and panel columns too; false "
                                           "(--no-judges) leaves them out")
    rows: list[RowSpec] = Field(default_factory=list,
                                description="the rows; RUNS on the command line are added after these")
    average: bool = Field(False, description="an Average column (mean of the row's columns, when all are "
                                             "present)")
    average_label: str = Field("Average", description="the average column's label")
    average_of: list[str] = Field(default_factory=list,
                                  description="the labels of the columns it averages (empty: every column)")
    reference: str | None = Field(None, description="the label of the row others are compared with")
    deltas: list[DeltaSpec] = Field(default_factory=list, description="rows of differences (`DeltaSpec`)")
    intervals: bool = Field(True, description="each value with its interval; false (--no-intervals): values "
                                              "only")
    significance: SignificanceSpec | None = Field(
        None, description="marks against the reference row (paired test; `SignificanceSpec`)")
    decimals: int = Field(1, ge=0, le=4, description="digits after the decimal point")

    @field_validator("significance")
    @classmethod
    def _against_reference(cls, value: SignificanceSpec | None,
                           info: ValidationInfo) -> SignificanceSpec | None:
        if value is not None and info.data.get("reference") is None:
            raise ValueError("significance marks are against a reference row: set `reference`")
        return value


DEFAULT = BoardSpec(name="default")


def load_board(path: Path | str) -> BoardSpec:
    """A board spec from a file, or by name from the shipped boards; errors name the file and the line."""
    path = Path(path)
    if not path.exists() and not path.suffix and (BOARDS / f"{path}.yaml").is_file():
        path = BOARDS / f"{path}.yaml"
    if not path.exists():  # a directory, a FIFO or a device: the YAML reader names it
        shipped = ", ".join(sorted(p.stem for p in BOARDS.glob("*.yaml")))
        raise ConfigError(f"board spec {path} does not exist (shipped boards: {shipped})")
    return load_strict(BoardSpec, path, "board spec")[0]
