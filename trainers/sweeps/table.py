"""A sweep's board in the paper's layout (`table:`), with the published numbers (`reference:`) beside it.

The reference file (YAML, `trainers/sweeps/references/<paper>_<table>.yaml`) holds a table as published:

    source: "<paper title>, Table N"        # the citation, shown in the caption
    note: "..."                              # optional: how the numbers were copied, what they mean
    columns: [Breast, Pneumonia, ...]        # the paper's column labels (= the sweep table's column labels)
    rows:
      - {label: "10 · V-RFT", values: {Breast: 60.89, Pneumonia: 51.28, ...}}   # null = not reported

Each measured row of the table is followed by the published row with the same label ("· published"); published
rows without a measured counterpart (e.g. a larger model the sweep does not train) come after. Plain tables:
bold / underline and delta rows are the leaderboard's work. The dry run's checks: `check.check_table`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from medharness.core.errors import ConfigError
from medharness.core.records import Strict
from medharness.core.yamlio import load_strict
from medharness.runs.folders import task_result
from medharness.trainers.sweeps.board import INTERVALS, cell_text, stats
from medharness.trainers.sweeps.schema import eval_tasks

if TYPE_CHECKING:
    from medharness.trainers.sweeps.schema import Cell, SweepConfig, TableRow
    from medharness.trainers.sweeps.stages import Stages

PUBLISHED = "published"


class ReferenceRow(Strict):
    label: str
    values: dict[str, float | None]


class Reference(Strict):
    """A published table: its citation, columns and rows."""

    source: str = Field(min_length=1)
    note: str | None = None
    columns: list[str]
    rows: list[ReferenceRow]


def load_reference(path: Path) -> Reference:
    """Parse a reference file; errors name the file, the line and the key (as sweep files)."""
    ref, _ = load_strict(Reference, path, "reference file")
    for row in ref.rows:
        unknown = sorted(set(row.values) - set(ref.columns))
        if unknown:
            raise ConfigError(f"{path}: row {row.label!r} has values for {unknown}, which are not in columns "
                              f"{ref.columns}")
    return ref


def reference_path(sweep: SweepConfig, stages: Stages) -> Path | None:
    return Path(stages.relative(sweep.reference)) if sweep.reference else None


# -- rows of the sweep's board that a table row selects ---------------------------------------------------

def groups(cells: Sequence[Cell]) -> dict[tuple[str, str | None, int | None], list[Cell]]:
    """Cells by board row: (recipe entry id, preset, shots); each group's cells differ by seed."""
    out: dict[tuple[str, str | None, int | None], list[Cell]] = {}
    for cell in cells:
        out.setdefault((cell.entry.key, cell.preset, cell.shots), []).append(cell)
    return out


def select(row: TableRow, cells: Sequence[Cell]) -> list[tuple[str, str | None, int | None]]:
    """The board groups a table row names (exactly one for a usable row)."""
    shots = None if row.shots in (None, "all") else int(row.shots)
    return [key for key in groups(cells)
            if key[0] == row.entry and (row.preset is None or key[1] == row.preset)
            and (row.shots is None or key[2] == shots)]


# -- the table --------------------------------------------------------------------------------------------

def paper_table(sweep: SweepConfig, cells: Sequence[Cell], stages: Stages) -> dict[str, Any] | None:
    """The table's rows (measured: mean, std and n over seeds per column; published: as in the reference
    file), or None when the sweep has no `table:` and no `reference:`."""
    spec = sweep.table
    path = reference_path(sweep, stages)
    ref = load_reference(path) if path else None
    if spec is None:
        return None if ref is None else {"title": None, "columns": ref.columns,
                                         "rows": _published(ref, set()), "source": ref.source,
                                         "note": ref.note}
    by_group = groups(cells)
    rows: list[dict[str, Any]] = []
    for trow in spec.rows:
        values: dict[str, dict[str, Any]] = {}
        for col in spec.columns:
            if col.average:
                continue
            task = trow.task or col.task
            runs: list[Path] = []
            if col.label in trow.blank:
                pass
            elif trow.reference is not None and task:
                runs = [stages.dir.reference_dir(trow.reference, task)]
            elif task:
                members = [c for key in select(trow, cells) for c in by_group[key]]
                runs = [stages.dir.eval_dir(c.id, task) for c in members if task in eval_tasks(sweep, c)]
            got = [task_result(run, str(task), col.metric) for run in runs]
            values[col.label] = {**stats(got), "expected": len(runs)}
        for col in (c for c in spec.columns if c.average):
            means = [v["mean"] for v in values.values()]
            mean = statistics.fmean(means) if means and None not in means else None
            values[col.label] = {"mean": mean, "std": None, "n": int(mean is not None), "low": None,
                                 "high": None, "expected": 1}  # an average of the row's columns: no interval
        rows.append({"label": trow.label, "kind": "measured", "values": values})
        if ref is not None:
            rows += [r for r in _published(ref, set()) if r["label"] == trow.label]
    labels = {r.label for r in spec.rows}
    if ref is not None:
        rows += [r for r in _published(ref, labels) if r["label"] not in labels]
    return {"title": spec.title, "columns": [c.label for c in spec.columns], "rows": rows,
            "source": ref.source if ref else None, "note": ref.note if ref else None,
            "decimals": spec.decimals}


def _published(ref: Reference, skip: set[str]) -> list[dict[str, Any]]:
    return [{"label": r.label, "kind": PUBLISHED, "values": {c: r.values.get(c) for c in ref.columns}}
            for r in ref.rows if r.label not in skip]


def render_table(table: dict[str, Any]) -> str:
    """The table as Markdown: measured cells `mean ± std` over seeds (`(i/n)` when seeds are missing, `n/a`
    when none finished); published rows marked and cited."""
    from tabulate import tabulate

    digits = table.get("decimals", 2)
    out = []
    for row in table["rows"]:
        if row["kind"] == PUBLISHED:
            cells = ["-" if (v := row["values"].get(c)) is None else f"{v:.{digits}f}"
                     for c in table["columns"]]
            out.append([f"{row['label']} · {PUBLISHED}", *cells])
            continue
        cells = []
        for c in table["columns"]:
            s = row["values"][c]
            cells.append(cell_text(s, s["expected"], digits))
        out.append([row["label"], *cells])
    lines = [f"## {table['title']}", ""] if table.get("title") else []
    lines.append(tabulate(out, headers=["row", *table["columns"]], tablefmt="github", disable_numparse=True))
    caption = ["", ("Measured rows: mean ± sample std over seeds (x100 for percentages); " + INTERVALS + "; "
                    "(i/n) = i of n seeds finished; n/a = no finished run; Average: no interval.")]
    if table.get("source"):
        caption.append(f"Rows marked '{PUBLISHED}': as published in {table['source']}; '-' = not reported."
                       + (f" {table['note']}" if table.get("note") else ""))
    return "\n".join(lines + caption) + "\n"
