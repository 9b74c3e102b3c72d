"""Running a sweep's cells: each stage is a `medharness` subprocess, and every stage is skipped when its
folder says it is finished, so a sweep (or one `--cell`) started again continues where it stopped. The sweep
folder's layout and its readers: `medharness.runs.folders` (SweepDir, TrainDir).

The stage commands are built in one place (`Stages`); `PROGRAM` is how `medharness` is started and
`TRAIN_PROGRAM` replaces the train stage's program (tests inject a fake trainer there for fault injection).
Every folder is built with `paths.inside` (a task or cell id that would leave SWEEP is refused), and a folder
that a stage must start afresh is moved into SWEEP/.set-aside/ (`paths.set_aside`), never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medharness.backends.vlm_common import is_adapter_folder
from medharness.core.errors import ConfigError, MedHarnessError
from medharness.core.paths import remove_own, set_aside
from medharness.runs.folders import SweepDir, run_status
from medharness.trainers.launch import launch_argv, machine_spec, write_launch_config
from medharness.trainers.sweeps.schema import Cell, SweepConfig, eval_prompt, eval_tasks, slug, train_prompt

log = logging.getLogger(__name__)

PROGRAM: list[str] = [sys.executable, "-m", "medharness.cli"]
TRAIN_PROGRAM: list[str] | None = None  # None: PROGRAM + ["train"]


class StageFailed(MedHarnessError):
    """A stage's subprocess failed or left its folder unfinished."""


# -- stages ---------------------------------------------------------------------------------------------

class Stages:
    """Builds and runs every stage command of one sweep."""

    def __init__(self, sweep: SweepConfig, sweep_file: Path, root: Path, resume: bool,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.sweep, self.file, self.root, self.resume, self.say = (
            sweep, sweep_file.resolve(), root, resume, say)
        self.base_dir = self.file.parent
        self.dir = SweepDir(root)

    def relative(self, ref: str) -> str:
        """A path in the sweep file, relative to the sweep file's folder when it is there."""
        candidate = self.base_dir / ref
        return str(candidate) if not Path(ref).is_absolute() and candidate.exists() else ref

    # base model
    def base_model(self, build: bool = True) -> str:
        """The base model; a `tiny[:SIZE]` spec is built into SWEEP/models/ once (atomically)."""
        model = self.sweep.model
        if model != "tiny" and not model.startswith("tiny:"):
            return self.relative(model)
        size = model.partition(":")[2] or "tiny"
        if size not in ("tiny", "small"):
            raise ConfigError(f"model: {model!r}: tiny models are tiny or tiny:small")
        out = self.dir.model_dir(size)
        if build and not (out / "config.json").is_file():
            tmp = out.with_name(f".{out.name}.{os.getpid()}")
            self._call([*PROGRAM, "make-tiny-model", str(tmp), "--size", size], self.dir.logs / "models.log")
            if not (out / "config.json").is_file():
                set_aside(out, self.root)  # without config.json: an earlier build that did not finish
                os.replace(tmp, out)
            else:
                remove_own(tmp, self.root)
        return str(out.resolve())

    # argv
    def split_argv(self, task: str, shots: int, seed: int, out: Path) -> list[str]:
        argv = [*PROGRAM, "split", "--task", task, "--kshot", str(shots), "--seed", str(seed),
                "--output", str(out)]
        return argv + (["--data-dir", self.sweep.data_dir] if self.sweep.data_dir else [])

    def overrides(self, cell: Cell) -> list[str]:
        """The `-C KEY=VALUE` items of a cell's train command."""
        s = self.sweep
        return (([f"data_dir={s.data_dir}"] if s.data_dir else []) + list(s.overrides)
                + list(cell.entry.overrides))

    def train_argv(self, cell: Cell, model: str, samples: Path | None, resume: bool) -> list[str]:
        s, e = self.sweep, cell.entry
        argv = ["train", "--recipe", e.recipe, "--task", cell.task, "--model", model,
                "--seed", str(cell.seed), "--output", str(self.dir.train_dir(cell.id).root)]
        for preset in [*cell.presets, *s.common_presets]:
            argv += ["--preset", preset]
        if e.config:
            argv += ["--config", self.relative(e.config)]
        if train_prompt(s, cell):
            argv += ["--prompt", str(train_prompt(s, cell))]
        if samples is not None:
            argv += ["--samples", str(samples)]
        if s.max_steps:
            argv += ["--max-steps", str(s.max_steps)]
        for item in self.overrides(cell):
            argv += ["-C", item]
        if resume:
            argv.append("--resume")
        if TRAIN_PROGRAM is not None:
            return [*TRAIN_PROGRAM, *argv[1:]]
        if s.launch.launcher == "accelerate":
            spec = machine_spec(s.launch.num_processes, s.launch.deepspeed, s.launch.fsdp)
            config = write_launch_config(spec, self.dir.train_dir(cell.id).root)
            return launch_argv(argv, config, spec.num_processes)
        return [*PROGRAM, *argv]

    def eval_argv(self, model: str, task: str, out: Path, resume: bool, baseline: bool = False,
                  prompt: str | None = None) -> list[str]:
        e = self.sweep.eval
        argv = [*PROGRAM, "run", "--model", model, "--tasks", task, "--output", str(out), "--no-progress",
                "--batch-size", str(e.batch_size)]
        if not baseline:
            argv += ["--backend", e.backend]
            for key, value in e.backend_options.items():
                argv += ["--backend-option", f"{key}={json.dumps(value)}"]
        for flag, value in (("--limit", e.limit), ("--max-new-tokens", e.max_new_tokens),
                            ("--samples", self.relative(e.samples) if e.samples else None),
                            ("--data-dir", self.sweep.data_dir)):
            if value is not None:
                argv += [flag, str(value)]
        if prompt:
            argv += ["-T", f"{task}.prompt={prompt}"]
        return argv + (["--resume"] if resume else [])

    # running
    def _call(self, argv: list[str], log_file: Path) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log.info("running %s", " ".join(argv))
        with log_file.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(argv)}\n")
            fh.flush()
            code = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0:
            tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            raise StageFailed(f"`{' '.join(argv[:4])} ...` exited with {code}; see {log_file}:\n  "
                              + "\n  ".join(tail))

    def _set_aside(self, folder: Path, why: str) -> None:
        moved = set_aside(folder, self.root)
        self.say(f"  {folder} is started afresh ({why}); what was there is kept in {moved}")

    def _need_resume(self, what: str, where: Path) -> None:
        if not self.resume:
            raise ConfigError(f"{what} in {where} was started before and is not finished: pass --resume to "
                              "continue it")

    def split(self, task: str, shots: int, seed: int) -> Path:
        split_seed = seed if self.sweep.split_seed is None else self.sweep.split_seed
        out = self.dir.split_file(task, shots, split_seed)
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.json")
            self._call(self.split_argv(task, shots, split_seed, tmp), self.dir.logs / "splits.log")
            os.replace(tmp, out)
        return out

    def evaluate(self, model: str, task: str, out: Path, log_file: Path, baseline: bool = False,
                 prompt: str | None = None) -> None:
        """One `medharness run`, skipped when finished, resumed when started (with --resume)."""
        status = run_status(out)
        if status == "finished":
            return
        if status is not None:
            self._need_resume("the evaluation", out)
        elif out.exists():  # a folder without run.json: a run that never started
            self._set_aside(out, "it has no run.json")
        self.say(f"  eval {task} -> {out}")
        self._call(self.eval_argv(model, task, out, resume=status is not None, baseline=baseline,
                                  prompt=prompt),
                   log_file)
        if run_status(out) != "finished":
            raise StageFailed(f"{out}: the run did not finish (status {run_status(out)})")

    def cell_model(self, cell: Cell) -> str:
        """What a cell trains from: the base model, or its parent's final (merged when it is an adapter)."""
        if cell.parent is None:
            return self.base_model()
        state = self.dir.train_dir(cell.parent).state()
        if state.status != "finished" or state.final is None:
            raise StageFailed(f"cell {cell.id} trains from {cell.parent}, which has not finished training "
                              "(run it first: `--cell " + cell.parent + "`)")

        if not is_adapter_folder(state.final):
            return str(state.final)
        merged = self.dir.merged_dir(cell.parent)
        # merged once, atomically (child cells may run in parallel)
        if not (merged / "config.json").is_file():
            tmp = merged.with_name(f".merged.{os.getpid()}")
            remove_own(tmp, self.root)  # left by an earlier process with this pid
            self._call([*PROGRAM, "merge", str(state.final), "--output", str(tmp)],
                       self.dir.cell_logs(cell.parent) / "merge.log")
            if not (merged / "config.json").is_file():
                set_aside(merged, self.root)  # a merge that did not finish
                os.replace(tmp, merged)
            else:
                remove_own(tmp, self.root)
        return str(merged.resolve())

    def train(self, cell: Cell) -> Path:
        """The train stage; returns the final checkpoint."""
        out = self.dir.train_dir(cell.id).root
        state = self.dir.train_dir(cell.id).state()
        if state.status == "finished" and state.final is not None:
            return state.final
        started = state.status is not None
        if started:
            self._need_resume("the training", out)
        elif out.exists():  # never wrote train.json: start afresh
            self._set_aside(out, "it has no train.json")
        samples = self.split(cell.task, cell.shots, cell.seed) if cell.shots is not None else None
        argv = self.train_argv(cell, self.cell_model(cell), samples, resume=started)
        self.say(f"  train {cell.entry.recipe} ({'resumed' if started else 'new'}) -> {out}")
        self._call(argv, self.dir.cell_logs(cell.id) / "train.log")
        state = self.dir.train_dir(cell.id).state()
        if state.status != "finished" or state.final is None:
            raise StageFailed(f"{out}: training did not finish (train.json status {state.status})")
        return state.final

    def run_cell(self, cell: Cell) -> None:
        """Train (or skip), then evaluate the final checkpoint (and each checkpoint-N with checkpoints:
        all)."""
        final = self.train(cell)
        logs = self.dir.cell_logs(cell.id)
        for task in eval_tasks(self.sweep, cell):
            self.evaluate(str(final), task, self.dir.eval_dir(cell.id, task), logs / f"eval-{task}.log",
                          prompt=eval_prompt(self.sweep, cell, task))
        if self.sweep.eval.checkpoints == "all":
            for ckpt in self.dir.train_dir(cell.id).checkpoints():
                for task in eval_tasks(self.sweep, cell):
                    self.evaluate(str(ckpt), task, self.dir.eval_dir(cell.id, task, ckpt.name),
                                  logs / f"eval-{ckpt.name}-{task}.log",
                                  prompt=eval_prompt(self.sweep, cell, task))

    def run_reference(self, name: str, model: str | None, tasks: list[str]) -> None:
        """The base model's row (`model` None) or a baseline's (`baseline:KIND`), once per eval task."""
        baseline = model is not None
        model = model or self.base_model()
        for task in tasks:
            self.evaluate(model, task, self.dir.reference_dir(name, task),
                          self.dir.reference_logs(name) / f"{task}.log", baseline=baseline,
                          prompt=eval_prompt(self.sweep, None, task))

    def cell_finished(self, cell: Cell) -> bool:
        state = self.dir.train_dir(cell.id).state()
        return state.status == "finished" and all(
            run_status(self.dir.eval_dir(cell.id, t)) == "finished" for t in eval_tasks(self.sweep, cell))


def reference_rows(sweep: SweepConfig) -> dict[str, str | None]:
    """Reference row name -> its model: `base` -> None (the sweep's base model), `baseline-KIND` ->
    baseline:KIND."""
    rows: dict[str, str | None] = {"base": None} if sweep.base_row else {}
    for b in sweep.baselines:
        kind = b.removeprefix("baseline:")
        rows[f"baseline-{slug(kind)}"] = f"baseline:{kind}"
    return rows


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
