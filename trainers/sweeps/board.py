"""A sweep's boards, as `leaderboards` board specs over its run directories (rendered by `leaderboards`, like
every other board):

- every row (`every_row`): the reference rows (the base model, the baselines), then one row per (recipe
  entry, preset, shots) whose runs are its seeds (mean ± std, t interval over seeds; `(i/n)` when seeds are
  missing), a column per eval task (its primary metric);
- the paper's layout (`paper_table`), when the sweep has a `table:`: its rows and columns, each measured row
  followed by the published row of the same label from the board spec that `reference:` names (a shipped board
  such as `vrft_table1`, or a path), whose published rows are the one copy of the paper's numbers; published
  rows without a measured counterpart (a larger model the sweep does not train) come after.

The dry run's checks of `table:` and `reference:`: `check.check_table`.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.core.errors import DataError
from medharness.leaderboards.board import build
from medharness.leaderboards.render import render_json, render_markdown
from medharness.leaderboards.spec import BoardSpec, ColumnSpec, RowSpec, load_board
from medharness.runs.folders import SweepDir
from medharness.trainers.sweeps.schema import (
    Cell,
    SweepConfig,
    TableRow,
    ablation_folder,
    all_eval_tasks,
    eval_tasks,
    slug,
)

PUBLISHED = "published"
Group = tuple[str, str | None, int | None]  # (recipe entry id, preset, shots)


def groups(cells: Sequence[Cell]) -> dict[Group, list[Cell]]:
    """Cells by board row: (recipe entry id, preset, shots); each group's cells differ by seed (and training
    task)."""
    out: dict[Group, list[Cell]] = {}
    for cell in cells:
        out.setdefault((cell.entry.key, cell.preset, cell.shots), []).append(cell)
    return out


def select(row: TableRow, cells: Sequence[Cell]) -> list[Group]:
    """The board groups a table row names (exactly one for a usable row)."""
    shots = None if row.shots in (None, "all") else int(row.shots)
    return [key for key in groups(cells)
            if key[0] == row.entry and (row.preset is None or key[1] == row.preset)
            and (row.shots is None or key[2] == shots)]


def _chain(cell: Cell, by_id: dict[str, Cell]) -> str:
    parts = []
    node: Cell | None = cell
    while node is not None:
        parts.append(node.entry.recipe + (f"[{node.preset}]" if node.preset else ""))
        node = by_id.get(node.parent) if node.parent else None
    return " → ".join(reversed(parts))


def _paths(dirs: Sequence[Path]) -> list[str]:
    """Run directories as a row's `runs:` (paths or globs): escaped, so a folder name is never a pattern."""
    return [glob.escape(str(d)) for d in dirs]


def _seeds(members: Sequence[Cell]) -> list[int]:
    return sorted({c.seed for c in members})


def every_row(sweep: SweepConfig, cells: Sequence[Cell], folder: SweepDir, references: dict[str, str | None],
              base_label: str) -> BoardSpec:
    """Every row of the sweep: reference rows, then a row per (entry, preset, shots) over its seeds."""
    tasks = all_eval_tasks(sweep)
    rows = [RowSpec(label=name, runs=_paths([folder.reference_dir(name, t) for t in tasks]),
                    lineage=model or f"{base_label} (no training)") for name, model in references.items()]
    by_id = {c.id: c for c in cells}
    for (key, preset, shots), members in groups(cells).items():
        shots_text = "all" if shots is None else f"{shots}/class"
        seeds = _seeds(members)
        lineage = (f"{base_label} → {_chain(members[0], by_id)} · k={shots_text} · {len(seeds)} "
                   f"seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})")
        label = key + (f" [{preset}]" if preset else "") + f" · k={shots_text}"
        for mode in (None, *sweep.eval.ablate):
            sub = ablation_folder(mode) if mode else None
            runs = [folder.eval_dir(c.id, t, sub) for c in members for t in tasks
                    if t in eval_tasks(sweep, c)]
            rows.append(RowSpec(label=label + (f" · {mode} image" if mode else ""), runs=_paths(runs),
                                lineage=lineage + (f" · scored with run --ablate {mode}" if mode else ""),
                                expected=len(seeds)))
    return BoardSpec(name=slug(sweep.name or "sweep"), rows=rows,
                     columns=[ColumnSpec(task=t) for t in tasks])


def published_board(sweep: SweepConfig, base_dir: Path) -> BoardSpec | None:
    """The board spec `reference:` names (a shipped board's name, or a path relative to the sweep file)."""
    if not sweep.reference:
        return None
    candidate = base_dir / sweep.reference
    return load_board(candidate if candidate.exists() else sweep.reference)


def published_rows(board: BoardSpec) -> list[RowSpec]:
    return [r for r in board.rows if r.published is not None]


def _as_published(row: RowSpec) -> RowSpec:
    return row.model_copy(update={"label": f"{row.label} · {PUBLISHED}"})


def _row_runs(sweep: SweepConfig, trow: TableRow, cells: Sequence[Cell], folder: SweepDir,
              tasks: Sequence[str]) -> tuple[list[Path], int]:
    """A measured row's run directories (for the tasks its columns read) and the runs a column waits for."""
    if trow.reference is not None:
        return [folder.reference_dir(trow.reference, t) for t in tasks], 1
    by_group = groups(cells)
    members = [c for key in select(trow, cells) for c in by_group[key]]
    runs = [folder.eval_dir(c.id, t) for c in members for t in tasks if t in eval_tasks(sweep, c)]
    return runs, max(1, len(_seeds(members)))


def paper_table(sweep: SweepConfig, cells: Sequence[Cell], folder: SweepDir,
                published: BoardSpec | None) -> BoardSpec | None:
    """The table in the paper's layout with the published rows beside the measured ones; None when the sweep
    has no `table:` and no `reference:` (with only a reference: the published rows alone)."""
    spec = sweep.table
    if spec is None:
        return None if published is None else published.model_copy(
            update={"rows": [_as_published(r) for r in published_rows(published)], "deltas": [],
                    "reference": None, "significance": None})
    given = {r.label: r for r in published_rows(published)} if published else {}
    rows: list[RowSpec] = []
    for trow in spec.rows:
        tasks = [trow.task] if trow.task else [str(c.task) for c in spec.columns
                                               if c.task and not c.average and c.label not in trow.blank]
        runs, expected = _row_runs(sweep, trow, cells, folder, list(dict.fromkeys(tasks)))
        if runs:
            rows.append(RowSpec(label=trow.label, runs=_paths(runs), task=trow.task, blank=trow.blank,
                                expected=expected))
        if trow.label in given:
            rows.append(_as_published(given[trow.label]))
    labels = {r.label for r in spec.rows}
    rows += [_as_published(r) for label, r in given.items() if label not in labels]
    columns = [ColumnSpec(task=c.task, metric=c.metric, label=c.label) for c in spec.columns if not c.average]
    average = next((c for c in spec.columns if c.average), None)
    return BoardSpec(name=slug(sweep.name or "sweep"), title=spec.title, columns=columns, rows=rows,
                     average=average is not None, average_label=average.label if average else "Average",
                     average_of=average.of if average else [], decimals=spec.decimals,
                     caption=published.caption if published else None)


def render(spec: BoardSpec) -> tuple[str, dict[str, Any] | None]:
    """The board as Markdown and as its JSON record (`leaderboards.render`); a board with no finished run
    yet says so."""
    try:
        board = build(spec)
    except DataError as exc:
        title = f"# {spec.title}\n\n" if spec.title else ""
        return f"{title}No finished run to show yet ({exc}).\n", None
    return render_markdown(board), json.loads(render_json(board))
