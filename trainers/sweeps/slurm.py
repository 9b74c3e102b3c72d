"""`train-then-eval --executor slurm`: a sweep's cells as Slurm jobs, one `sbatch` job per cell.

    medharness train-then-eval --sweep FILE --output SWEEP --executor slurm \\
        --slurm-option partition=gpu --slurm-option time=24:00:00

Each job runs the cell's own command, the one `--print-commands` prints (`train-then-eval ... --cell ID
--resume`, through this interpreter: `python -m medharness.cli`), so a job writes exactly the folders a local
sweep writes (SWEEP/cells/ID/, SWEEP/reference/NAME/) and every finished stage is skipped when a job runs
again. A cell that trains `from:` another waits for its parent's job (`--dependency=afterok:ID`); the
reference rows and the first-stage cells start at once. A last job, after all of them, merges: the plain
`train-then-eval ... --resume`, which finds every stage finished and renders SWEEP/leaderboard.md and
SWEEP/sweep.json (the same board a local sweep ends in). With `--kill-on-invalid-dep=yes` a job whose parent
failed is cancelled, never left pending. Submitting again submits only the cells not yet finished. Nothing
is submitted for a sweep that the dry run's checks refuse (trainers/sweeps/check.py).

GPUs (`--gres=gpu:N`): a cell, the sweep's `launch: num_processes` with `launcher: accelerate` (else 1), or
more where its evaluation asks for them (`eval.backend_options` tensor_parallel_size x data_parallel_size);
a base-model row, its evaluation's; a baseline row and the merge, none. `--slurm-option gres=...` (or
gpus=...) replaces that for every job. Other `--slurm-option KEY=VALUE` become `#SBATCH --KEY=VALUE` lines.

Written inside SWEEP/slurm/ only: one script per job (ID.sbatch), the jobs' logs (logs/ID-JOBID.out/.err)
and jobs.json (name -> job id, dependencies, script) of the last submission.

Generated sbatch scripts, not submitit: each cell is already a self-contained shell command, so a script is
three lines a user can read, rerun with `sbatch` by hand or edit; nothing new to install (submitit pickles a
Python callable into its own folder layout and needs the same environment to unpickle it); and the
dependency chain is plain `sbatch --dependency`, checked here against a fake `sbatch` on PATH.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medharness.core.atomic import write_json_atomic, write_text_atomic
from medharness.core.errors import ConfigError, MedHarnessError
from medharness.core.paths import inside
from medharness.runs.folders import run_status
from medharness.trainers.sweeps.schema import Cell, SweepConfig, all_eval_tasks
from medharness.trainers.sweeps.stages import PROGRAM, Stages

SLURM_DIR = "slurm"
MERGE = "merge"
REFERENCE_PREFIX = "reference-"  # a reference row's --cell, as sweeps/cli.py names it (no import cycle)
# sbatch options medharness sets itself (a --slurm-option may not)
OWN = {"job-name", "output", "error", "dependency", "kill-on-invalid-dep", "parsable", "chdir"}
GPU_KEYS = {"gres", "gpus", "gpus-per-node", "gpus-per-task"}  # a --slurm-option that decides the GPUs
_KEY = re.compile(r"[a-z][a-z0-9-]*")
_SUBMITTED = re.compile(r"Submitted batch job (\d+)")


class SubmitFailed(MedHarnessError):
    """`sbatch` refused a job or answered without a job id."""


@dataclass(frozen=True)
class Job:
    """One sbatch submission: medharness's arguments, the GPUs it declares, the jobs it waits for."""

    name: str  # a cell id, reference-NAME, or merge
    args: list[str]
    gpus: int
    after: list[str] = field(default_factory=list)


def parse_options(items: list[str]) -> dict[str, str]:
    """`--slurm-option KEY=VALUE` items as {sbatch long option: value} (`time_limit` -> `time-limit`)."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not eq or not _KEY.fullmatch(key) or not value or any(c.isspace() for c in value):
            raise ConfigError(f"--slurm-option {item!r}: give KEY=VALUE, an sbatch long option without its "
                              "dashes and a value without spaces (e.g. partition=gpu, time=24:00:00)")
        if key in OWN:
            raise ConfigError(f"--slurm-option {key}: medharness sets --{key} itself (see docs/scaling.md)")
        out[key] = value
    return out


def eval_gpus(sweep: SweepConfig) -> int:
    """The GPUs one evaluation asks for (vLLM's tensor_parallel_size x data_parallel_size; else 1)."""
    options = sweep.eval.backend_options
    return int(options.get("tensor_parallel_size", 1) or 1) * int(options.get("data_parallel_size", 1) or 1)


def cell_gpus(sweep: SweepConfig) -> int:
    """The GPUs a cell's job declares: its training's processes (the sweep's `launch:`), or its
    evaluation's where that is more."""
    train = sweep.launch.num_processes if sweep.launch.launcher == "accelerate" else 1
    return max(train, eval_gpus(sweep))


def sweep_args(file: Path, stages: Stages, data_dir: str | None) -> list[str]:
    """`train-then-eval --sweep FILE --output SWEEP [--data-dir D]`, as --print-commands prints it."""
    return ["train-then-eval", "--sweep", str(file), "--output", str(stages.root),
            *(["--data-dir", data_dir] if data_dir else [])]


def reference_finished(stages: Stages, name: str) -> bool:
    return all(run_status(stages.dir.reference_dir(name, task)) == "finished"
               for task in all_eval_tasks(stages.sweep))


def plan(file: Path, stages: Stages, cells: list[Cell], references: dict[str, str | None],
         data_dir: str | None = None) -> list[Job]:
    """The jobs to submit, parents first: every reference row and cell not yet finished (a cell waits for
    its parent's job where the parent is not finished either), then the merge after all of them."""
    base, sweep = sweep_args(file, stages, data_dir), stages.sweep
    jobs = [Job(REFERENCE_PREFIX + name, [*base, "--cell", REFERENCE_PREFIX + name, "--resume"],
                0 if model is not None else eval_gpus(sweep))
            for name, model in references.items() if not reference_finished(stages, name)]
    pending: set[str] = set()
    for cell in sorted(cells, key=lambda c: c.stage):
        if stages.cell_finished(cell):
            continue
        after = [cell.parent] if cell.parent in pending else []
        jobs.append(Job(cell.id, [*base, "--cell", cell.id, "--resume"], cell_gpus(sweep), after))
        pending.add(cell.id)
    return [*jobs, Job(MERGE, [*base, "--resume"], 0, [job.name for job in jobs])]


def script(job: Job, folder: Path, options: dict[str, str], sweep_name: str, workdir: Path) -> str:
    """The job's sbatch script: its #SBATCH lines, then its one command."""
    logs = folder / "logs"
    lines = ["#!/bin/bash", f"#SBATCH --job-name=mh-{sweep_name}-{job.name}",
             f"#SBATCH --output={logs / job.name}-%j.out", f"#SBATCH --error={logs / job.name}-%j.err",
             f"#SBATCH --chdir={workdir}"]
    if job.gpus and not GPU_KEYS & set(options):
        lines.append(f"#SBATCH --gres=gpu:{job.gpus}")
    lines += [f"#SBATCH --{key}={value}" for key, value in options.items()]
    lines += ["# written by `medharness train-then-eval --executor slurm` (trainers/sweeps/slurm.py)",
              "set -euo pipefail", shlex.join([*PROGRAM, *job.args])]
    return "\n".join(lines) + "\n"


def submit(jobs: list[Job], root: Path, options: dict[str, str], sweep_name: str, workdir: Path,
           say: Callable[[str], None] = print) -> dict[str, str]:
    """Write each job's script into SWEEP/slurm/ and submit it with `sbatch` (parents first, so a job's
    dependencies have their ids); returns {job name: Slurm job id} and writes SWEEP/slurm/jobs.json."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError("--executor slurm: `sbatch` is not on PATH (run this on a Slurm login node; "
                          "`--print-commands` lists the same per-cell commands for another scheduler)")
    folder = inside(root, SLURM_DIR)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    record: list[dict[str, object]] = []
    for job in jobs:
        path = inside(folder, f"{job.name}.sbatch")
        write_text_atomic(path, script(job, folder, options, sweep_name, workdir))
        argv = [sbatch]
        if job.after:
            argv += [f"--dependency=afterok:{':'.join(ids[name] for name in job.after)}",
                     "--kill-on-invalid-dep=yes"]
        argv.append(str(path))
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        found = _SUBMITTED.search(done.stdout)
        if done.returncode != 0 or found is None:
            raise SubmitFailed(f"sbatch refused {path} (exit {done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-500:]}; submitted before it: "
                               f"{json.dumps(ids)} (see {folder / 'jobs.json'})")
        ids[job.name] = found.group(1)
        record.append({**asdict(job), "job_id": ids[job.name], "script": str(path)})
        write_json_atomic(folder / "jobs.json", record)
        say(f"submitted {job.name}: job {ids[job.name]}"
            + (f" after {', '.join(job.after)}" if job.after and job.name != MERGE else "")
            + (f", {job.gpus} GPU(s)" if job.gpus and not GPU_KEYS & set(options) else ""))
    return ids


# how each scheduler's messages say it: (what it does with the sweep, what runs a cell, what a bad cell stops)
EXECUTOR_WORDS = {"slurm": ("submits", "job", "submitted"), "ray": ("runs", "Ray task", "started")}


def check_whole_sweep(args: argparse.Namespace, stages: Stages, cells: list[Cell]) -> None:
    """What a scheduler (`--executor slurm`, `ray`) checks before it starts anything: no per-cell flag (each
    of its jobs runs one `--cell`), and the dry run's checks of every cell (a bad cell starts nothing); data
    missing here is a note, as the jobs read it where they run."""
    does, unit, stopped = EXECUTOR_WORDS[args.executor]
    if args.cell or args.dry_run or args.print_commands or args.json:
        raise ConfigError(f"--executor {args.executor} {does} the whole sweep: leave out --cell, --dry-run, "
                          f"--json and --print-commands (each {unit} runs one --cell)")
    from medharness.trainers.sweeps.check import check_sweep

    found = check_sweep(stages.sweep, stages, cells)
    if found.problems:
        raise ConfigError(f"nothing {stopped}: {len(found.problems)} problem(s) (`--dry-run` lists them): "
                          + "; ".join(found.problems[:3]))
    for missing in found.missing_data:
        print(f"note: data not on this machine: {missing} (the {unit}s read it where they run)", flush=True)


def submit_sweep(args: argparse.Namespace, file: Path, stages: Stages, cells: list[Cell],
                 references: dict[str, str | None]) -> int:
    """The `--executor slurm` branch of `train-then-eval` (`--executor ray`: sweeps/ray_executor.py)."""
    if args.executor != "slurm":
        raise ConfigError("--slurm-option needs --executor slurm")
    check_whole_sweep(args, stages, cells)
    options = parse_options(args.slurm_option)
    jobs = plan(file, stages, cells, references, stages.sweep.data_dir if args.data_dir else None)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", stages.sweep.name or file.stem)
    ids = submit(jobs, stages.root, options, name, Path.cwd(), say=lambda line: print(line, flush=True))
    left = len(references) + len(cells) - (len(jobs) - 1)
    print(f"{len(jobs) - 1} job(s) and the merge (job {ids[MERGE]}) submitted"
          + (f"; {left} already finished, not submitted" if left else "")
          + f". Scripts, logs and jobs.json: {stages.root / SLURM_DIR}. When the merge job has run: "
          f"{stages.dir.board_file}; a failed job cancels those after it: fix it and submit again (finished "
          "cells are skipped)")
    return 0
