"""`medharness train-then-eval`: run a sweep (trainers/sweep.py) cell by cell and render its leaderboard.

    medharness train-then-eval [--sweep FILE] [--output DIR] [--resume] [--dry-run [--json]]
                               [--print-commands] [--cell ID]
                               [--executor local|slurm|ray [--slurm-option K=V] [--ray-address ADDRESS]]

Without --cell: the reference rows (base model, baselines), then every cell in stage order (a cell whose
parent failed is skipped), then SWEEP/leaderboard.md and SWEEP/sweep.json. With --cell: that cell only (for a
scheduler; `--print-commands` lists one such command per cell, by stage, and the final merge command).
`--executor slurm` submits those commands as sbatch jobs (trainers/sweeps/slurm.py), `--executor ray` runs
them as Ray tasks and then merges here (trainers/sweeps/ray_executor.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medharness.core.errors import ConfigError
from medharness.trainers.sweeps import DEMO

if TYPE_CHECKING:  # the sweep modules (pydantic schemas) load only when a sweep command runs
    from medharness.trainers.sweeps.schema import Cell, SweepConfig
    from medharness.trainers.sweeps.stages import Stages


REFERENCE_PREFIX = "reference-"


def add_commands(sub: argparse._SubParsersAction) -> dict[str, Any]:
    p = sub.add_parser("train-then-eval",
                       help="a sweep: train each cell of a grid, evaluate it, one leaderboard",
                       description="Train every cell of a YAML grid (recipes x tasks x shots x seeds x "
                                   "presets), evaluate each final checkpoint, evaluate the base model and "
                                   "baselines once, and render mean ± std over seeds with each row's "
                                   "lineage. Finished stages are skipped; --resume continues unfinished "
                                   "ones; a stage folder started afresh is kept in OUTPUT/.set-aside/, never "
                                   "deleted. See docs/training-eval.md.")
    p.add_argument("--sweep", type=Path, help=f"sweep YAML (default: the shipped demo, {DEMO.name})")
    p.add_argument("--output", type=Path, help="sweep folder (default runs/sweeps/<sweep name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue stages that were started and did not finish")
    p.add_argument("--dry-run", action="store_true", help="resolve and check every cell; train nothing")
    p.add_argument("--json", action="store_true",
                   help="with --dry-run: one JSON object: per cell its resolved train config (as `train "
                        "--dry-run --json` prints it) and its evaluation settings per task (prompt variant, "
                        "generation budget, judges, the run command); the reference rows; the findings")
    p.add_argument("--print-commands", action="store_true",
                   help="print one self-contained command per cell (for Slurm arrays, Ray jobs) and the "
                        "merge")
    p.add_argument("--cell", help="run this cell only (an id from --print-commands or --dry-run)")
    p.add_argument("--executor", choices=["local", "slurm", "ray"], default="local",
                   help="local: run the cells here, one after another (default); slurm: submit one sbatch "
                        "job per cell (a `from:` cell after its parent's) and a merge job that renders the "
                        "board; ray: run each cell as a Ray task declaring its GPUs (a `from:` cell after "
                        "its parent's), as many at once as the cluster holds, then render the board here "
                        "(needs medharness[ray]). Both run each cell's --print-commands command and skip "
                        "finished cells (docs/scaling.md)")
    p.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="with --executor slurm: an sbatch option for every job, e.g. partition=gpu, "
                        "time=24:00:00 (repeatable)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --executor ray: the Ray cluster, `auto` (the one `ray start` started on this "
                        "machine) or HOST:PORT (default: a local Ray instance for this sweep, stopped at the "
                        "end)")
    from medharness.core.schemadocs import field_help  # the sweep file's field, without importing its schema

    p.add_argument("--data-dir", help=field_help("medharness.trainers.sweeps.schema:SweepConfig", "data_dir")
                   + "; replaces the sweep file's `data_dir:`")
    return {"train-then-eval": cmd_sweep}


def _paths(args: argparse.Namespace) -> tuple[Path, SweepConfig, Path]:
    from medharness.trainers.sweeps.schema import load_sweep

    file = (args.sweep or DEMO).resolve()
    sweep = load_sweep(file)
    if args.data_dir:
        sweep = sweep.model_copy(update={"data_dir": str(Path(args.data_dir).resolve())})
    output = args.output or Path("runs") / "sweeps" / (sweep.name or file.stem)
    return file, sweep, output.resolve()


def cmd_sweep(args: argparse.Namespace) -> int:
    from medharness.runs.runlog import RunLock
    from medharness.trainers.sweeps.schema import expand
    from medharness.trainers.sweeps.stages import Stages, reference_rows

    file, sweep, output = _paths(args)
    cells = expand(sweep)
    stages = Stages(sweep, file, output, resume=args.resume, say=lambda line: print(line, flush=True))
    references = reference_rows(sweep)
    if args.executor == "ray" or args.ray_address:  # Ray tasks run the cells (sweeps/ray_executor.py)
        from medharness.trainers.sweeps.ray_executor import run_on_ray

        return run_on_ray(args, stages, cells, references, lambda failed, started: merge_executed(
            sweep, file, stages, cells, references, failed, started))
    if args.executor != "local" or args.slurm_option:  # a scheduler runs the cells (trainers/sweeps/slurm.py)
        from medharness.trainers.sweeps.slurm import submit_sweep

        return submit_sweep(args, file, stages, cells, references)
    if args.print_commands:
        print_commands(file, stages, cells, references, sweep.data_dir if args.data_dir else None)
        return 0
    if args.json and not args.dry_run:
        raise ConfigError("--json prints the --dry-run: give --dry-run too")
    if args.dry_run:
        return dry_run_json(sweep, file, stages, cells, references) if args.json else dry_run(
            sweep, stages, cells, references)
    output.mkdir(parents=True, exist_ok=True)
    # one whole-sweep writer (sweep.json, the board); `--cell` runs may go side by side: each stage locks
    # its own folder (train's output, each run directory)
    lock = None if args.cell else RunLock.acquire(output, "train-then-eval")
    try:
        if args.cell:
            return run_one(args.cell, stages, cells, references)
        return run_all(sweep, file, stages, cells, references)
    finally:
        stages.close()
        if lock is not None:
            lock.release()


def run_all(sweep: SweepConfig, file: Path, stages: Stages, cells: list[Cell],
            references: dict[str, str | None]) -> int:
    from medharness.trainers.sweeps.schema import all_eval_tasks
    from medharness.trainers.sweeps.stages import StageFailed

    failed: dict[str, str] = {}
    for name, model in references.items():
        print(f"[reference {name}]", flush=True)
        try:
            stages.run_reference(name, model, all_eval_tasks(sweep))
        except StageFailed as exc:
            failed[REFERENCE_PREFIX + name] = str(exc)
            print(f"  failed: {exc}", file=sys.stderr)
    for cell in cells:
        print(f"[cell {cell.id}]", flush=True)
        if cell.parent in failed:
            failed[cell.id] = f"not run: its parent {cell.parent} failed"
            print(f"  skipped: {failed[cell.id]}", file=sys.stderr)
            continue
        try:
            stages.run_cell(cell)
        except StageFailed as exc:
            failed[cell.id] = str(exc)
            print(f"  failed: {exc}", file=sys.stderr)
    board_path = write_board(sweep, file, stages, cells, references, failed)
    print(board_path.read_text(encoding="utf-8"), end="")
    print(f"wrote {board_path} and {stages.dir.log_file}")
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}; fix and rerun with --resume",
              file=sys.stderr)
        return 1
    return 0


def merge_executed(sweep: SweepConfig, file: Path, stages: Stages, cells: list[Cell],
                   references: dict[str, str | None], failed: dict[str, str], started: int) -> int:
    """After an executor ran the cells (`failed`: {cell: why} of those that did not finish): every stage
    finished, the local `--resume` (`run_all`, which finds them finished and renders the board); else the
    board of what finished, as a local sweep writes it with failed cells, and nothing is run here."""
    from medharness.trainers.sweeps.slurm import reference_finished

    failed = dict(failed)
    for name in references:
        if REFERENCE_PREFIX + name not in failed and not reference_finished(stages, name):
            failed[REFERENCE_PREFIX + name] = "its task ended but its runs are not finished"
    for cell in cells:
        if cell.id not in failed and not stages.cell_finished(cell):
            failed[cell.id] = (f"not run: its parent {cell.parent} failed" if cell.parent in failed
                               else "its task ended but its folders are not finished")
    order = [REFERENCE_PREFIX + name for name in references] + [cell.id for cell in cells]
    failed = {cid: failed[cid] for cid in order if cid in failed}  # as a local sweep lists them
    if not failed:
        print(f"{started} task(s) finished; merging" if started else
              "every cell had finished: nothing started; merging", flush=True)
        return run_all(sweep, file, stages, cells, references)
    board_path = write_board(sweep, file, stages, cells, references, failed)
    print(board_path.read_text(encoding="utf-8"), end="")
    print(f"wrote {board_path} and {stages.dir.log_file}")
    print(f"{len(failed)} cell(s) failed: {', '.join(failed)}; fix and run the same command again (finished "
          "cells are skipped)", file=sys.stderr)
    return 1


def run_one(cid: str, stages: Stages, cells: list[Cell], references: dict[str, str | None]) -> int:
    from medharness.trainers.sweeps.schema import all_eval_tasks

    if cid.startswith(REFERENCE_PREFIX) and cid.removeprefix(REFERENCE_PREFIX) in references:
        name = cid.removeprefix(REFERENCE_PREFIX)
        stages.run_reference(name, references[name], all_eval_tasks(stages.sweep))
        print(f"reference {name}: finished")
        return 0
    by_id = {c.id: c for c in cells}
    if cid not in by_id:
        known = [REFERENCE_PREFIX + n for n in references] + list(by_id)
        raise ConfigError(f"no cell {cid!r} in this sweep; cells: {', '.join(known)}")
    stages.run_cell(by_id[cid])
    print(f"cell {cid}: finished")
    return 0


def print_commands(file: Path, stages: Stages, cells: list[Cell], references: dict[str, str | None],
                   data_dir: str | None = None) -> None:
    from medharness.trainers.sweeps.schema import all_eval_tasks

    base = ["medharness", "train-then-eval", "--sweep", str(file), "--output", str(stages.root),
            *(["--data-dir", data_dir] if data_dir else [])]  # the data folder the command line gave
    print(f"# {len(cells)} cell(s) and {len(references)} reference row(s); each command is self-contained "
          "and can be rerun (finished stages are skipped). Run the stages in order; within a stage, in "
          "parallel. Under each, as comments: the commands its stages run (in a fresh sweep folder).")
    if stages.sweep.model == "tiny" or stages.sweep.model.startswith("tiny:"):
        print(f"# the base model, built by the first stage that needs it: "
              f"{shlex.join(['medharness', *stages.model_args(stages.dir.model_dir(stages.tiny_size()))])}")
    if references:
        print("# stage 0: reference rows")
        for name, model in references.items():
            print(shlex.join([*base, "--cell", REFERENCE_PREFIX + name, "--resume"]))
            for command in stages.reference_commands(name, model, all_eval_tasks(stages.sweep)):
                print(f"#   {command.text()}")
    for stage in sorted({c.stage for c in cells}):
        note = f" (each after its parent cell of stage {stage - 1})" if stage > 1 else ""
        print(f"# stage {stage}{note}")
        for cell in (c for c in cells if c.stage == stage):
            print(shlex.join([*base, "--cell", cell.id, "--resume"]))
            for command in stages.cell_commands(cell):
                print(f"#   {command.text()}")
    print("# when every cell is done: merge the folders and render the leaderboard")
    print(shlex.join([*base, "--resume"]))


def dry_run(sweep: SweepConfig, stages: Stages, cells: list[Cell], references: dict[str, str | None]) -> int:
    from tabulate import tabulate

    from medharness.trainers.sweeps.check import check_sweep

    found = check_sweep(sweep, stages, cells)
    problems = found.problems
    rows = [[REFERENCE_PREFIX + name, 0, model or "base model", "-", "-", "-", "-"]
            for name, model in references.items()]
    rows += [[c.id, c.stage, c.entry.recipe, c.preset or "-", c.task, "all" if c.shots is None else c.shots,
              c.seed] for c in cells]
    print(tabulate(rows, headers=["cell", "stage", "recipe", "preset", "task", "shots", "seed"],
                   tablefmt="github"))
    print()
    for note in found.notes:
        print(f"ok: {note}")
    for warning in found.warnings:
        print(f"warning: {warning}")
    for missing in found.missing_data:
        print(f"data not here: {missing}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    status = "ready" if not problems else f"{len(problems)} problem(s)"
    if found.missing_data and not problems:
        status += (f"; the data of {len(found.missing_data)} task(s) is not on this machine (give "
                   "`data_dir:` or --data-dir): the cells that read it cannot start here")
    print(f"{len(cells)} cell(s), {len(references)} reference row(s): {status}")
    return 0 if not problems else 2


def dry_run_json(sweep: SweepConfig, file: Path, stages: Stages, cells: list[Cell],
                 references: dict[str, str | None]) -> int:
    import json

    from medharness.trainers.sweeps.check import cell_settings, check_sweep, reference_settings

    found = check_sweep(sweep, stages, cells)
    info = {"sweep": sweep.name or file.stem, "file": str(file), "output": str(stages.root),
            "references": [reference_settings(sweep, stages, name, model)
                           for name, model in references.items()],
            "cells": [cell_settings(sweep, stages, cell) for cell in cells],
            "problems": found.problems, "warnings": found.warnings, "missing_data": found.missing_data,
            "notes": found.notes, "ready": not found.problems}
    print(json.dumps(info, indent=1, default=str))
    return 0 if not found.problems else 2


def write_board(sweep: SweepConfig, file: Path, stages: Stages, cells: list[Cell],
                 references: dict[str, str | None], failed: dict[str, str]) -> Path:
    from medharness.core.atomic import write_json_atomic, write_text_atomic
    from medharness.core.records import SweepCell, SweepCellEval, SweepCellTrain, SweepLog
    from medharness.core.secrets import scrub_value
    from medharness.runs.results import task_result
    from medharness.trainers.sweeps.board import every_row, paper_table, published_board, render
    from medharness.trainers.sweeps.schema import all_eval_tasks

    base_label = Path(sweep.model).name if Path(stages.relative(sweep.model)).exists() else sweep.model
    tasks = all_eval_tasks(sweep)
    path = stages.dir.board_file
    title = f"Sweep {sweep.name or file.stem}: {base_label}"
    every_text, every = render(every_row(sweep, cells, stages.dir, references, base_label))
    parts, table = [f"# {title}"], None
    paper = paper_table(sweep, cells, stages.dir, published_board(sweep, stages.base_dir))
    if paper is not None:  # the paper's layout first, with the published rows; then every row of the board
        paper_text, table = render(paper.model_copy(update={"title": None}))
        parts += [*([f"## {paper.title}"] if paper.title else []), paper_text, "## Every row"]
    text = "\n\n".join([*parts, every_text])
    write_text_atomic(path, text)
    cell_records = []
    for c in cells:
        state = stages.dir.train_dir(c.id).state()
        train = SweepCellTrain(dir=str(stages.dir.train_dir(c.id).root), status=state.status,
                               final=state.final and str(state.final))
        evals = {t: SweepCellEval(dir=str(stages.dir.eval_dir(c.id, t)),
                                  result=task_result(stages.dir.eval_dir(c.id, t), t)) for t in tasks}
        cell_records.append(SweepCell(id=c.id, recipe=c.entry.recipe, entry=c.entry.key, preset=c.preset,
                                      task=c.task, shots=c.shots, seed=c.seed, parent=c.parent, stage=c.stage,
                                      train=train, eval=evals, finished=stages.cell_finished(c),
                                      error=failed.get(c.id)))
    log = SweepLog(sweep_file=str(file), output=str(stages.root),
                   config=scrub_value(sweep.model_dump(mode="json", by_alias=True)), cells=cell_records,
                   board=every["cells"] if every else [], table=table, failed=failed)
    write_json_atomic(stages.dir.log_file, log.model_dump(mode="json"))
    return path
