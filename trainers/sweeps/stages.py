"""Running a sweep's cells: each stage is one `medharness` command, and every stage is skipped when its
folder says it is finished, so a sweep (or one `--cell`) started again continues where it stopped. The sweep
folder's layout and its readers: `medharness.runs.folders` (SweepDir, TrainDir).

A stage's command is built in one place (the `*_args` methods of `Stages`, medharness's own arguments): the
stage runs it, the dry run parses the train command's arguments back into the request that `train` would make
(trainers/sweeps/check.py), and `--print-commands` prints it. A stage runs in a child forked by the stage
worker (trainers/sweeps/worker.py: torch, transformers and TRL imported once per sweep, no interpreter
teardown per stage), or, where forking is not used (not Linux, `MEDHARNESS_SWEEP_STAGES=subprocess`, or the
worker finds CUDA unusable in a forked child), as a subprocess `PROGRAM ARGS`. Either way a crash stays in
the stage and the sweep goes on. `TRAIN_PROGRAM` replaces the train stage's program by another, always run as
a subprocess (tests inject a fake trainer there for fault injection).
Every folder is built with `paths.inside` (a task or cell id that would leave SWEEP is refused), and a folder
that a stage must start afresh is moved into SWEEP/.set-aside/ (`paths.set_aside`), never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medharness.backends.vlm_common import is_adapter_folder
from medharness.core.errors import ConfigError, MedHarnessError
from medharness.core.paths import remove_own, set_aside
from medharness.core.secrets import scrub
from medharness.runs.folders import SweepDir, run_status
from medharness.taskfiles.task import load_task
from medharness.trainers.cli import parse_train_args, train_request
from medharness.trainers.run import resolve
from medharness.trainers.sweeps.schema import (
    Cell,
    SweepConfig,
    ablation_folder,
    eval_prompt,
    eval_tasks,
    slug,
    train_prompt,
)
from medharness.trainers.sweeps.worker import StageWorker

log = logging.getLogger(__name__)

PROGRAM: list[str] = [sys.executable, "-m", "medharness.cli"]
TRAIN_PROGRAM: list[str] | None = None  # None: `medharness train`; else the program given train's arguments
ENTRY = "medharness.cli:main"  # what the stage worker calls with a stage's arguments
# imported once by the stage worker: what `train` and `run` import (no vllm: it may initialise CUDA)
PRELOAD = ("medharness.cli", "medharness.backends.hf", "medharness.runs.pipeline", "medharness.cli_output",
           "medharness.trainers.run", "medharness.trainers.recipes", "medharness.trainers.merge", "trl",
           "trl.trainer.sft_trainer", "trl.trainer.grpo_trainer", "peft", "datasets")
STAGES_ENV = "MEDHARNESS_SWEEP_STAGES"  # fork (default on Linux) | subprocess


def forking() -> bool:
    """Whether stages are forked by the stage worker (else each is a subprocess)."""
    mode = os.environ.get(STAGES_ENV, "fork")
    if mode not in ("fork", "subprocess"):
        raise ConfigError(f"{STAGES_ENV}={mode!r}: use fork or subprocess")
    return mode == "fork" and sys.platform == "linux"


@dataclass
class Command:
    """A stage's command: `medharness ARGS`, or ARGS given to `program` (a subprocess, never forked)."""

    args: list[str]
    program: list[str] | None = None

    def argv(self) -> list[str]:
        """As a subprocess runs it."""
        return [*(self.program or PROGRAM), *self.args]

    def text(self) -> str:
        """The equivalent command line."""
        return shlex.join(["medharness", *self.args] if self.program is None else self.argv())


class StageFailed(MedHarnessError):
    """A stage's subprocess failed or left its folder unfinished."""


# -- stages ---------------------------------------------------------------------------------------------

class Stages:
    """Builds and runs every stage command of one sweep; `close` stops the stage worker."""

    def __init__(self, sweep: SweepConfig, sweep_file: Path, root: Path, resume: bool,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.sweep, self.file, self.root, self.resume, self.say = (
            sweep, sweep_file.resolve(), root, resume, say)
        self.base_dir = self.file.parent
        self.dir = SweepDir(root)
        self.worker = (StageWorker(ENTRY, PRELOAD, self.dir.logs / "stage-worker.log", say) if forking()
                       else None)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

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
        size = self.tiny_size()
        out = self.dir.model_dir(size)
        if build and not (out / "config.json").is_file():
            tmp = out.with_name(f".{out.name}.{os.getpid()}")
            self._call(Command(self.model_args(tmp)), self.dir.logs / "models.log")
            if not (out / "config.json").is_file():
                set_aside(out, self.root)  # without config.json: an earlier build that did not finish
                os.replace(tmp, out)
            else:
                remove_own(tmp, self.root)
        return str(out.resolve())

    def tiny_size(self) -> str:
        size = self.sweep.model.partition(":")[2] or "tiny"
        if size not in ("tiny", "small"):
            raise ConfigError(f"model: {self.sweep.model!r}: tiny models are tiny or tiny:small")
        return size

    # the stage commands: medharness's arguments, built here only
    def model_args(self, out: Path) -> list[str]:
        return ["make-tiny-model", str(out), "--size", self.tiny_size()]

    def split_seed(self, cell: Cell) -> int:
        return cell.seed if self.sweep.split_seed is None else self.sweep.split_seed

    def split_args(self, cell: Cell, out: Path) -> list[str]:
        argv = ["split", "--task", cell.task, "--kshot", str(cell.shots), "--seed",
                str(self.split_seed(cell)), "--output", str(out)]
        return argv + (["--data-dir", self.sweep.data_dir] if self.sweep.data_dir else [])

    def overrides(self, cell: Cell) -> list[str]:
        """The `-C KEY=VALUE` items of a cell's train command."""
        s = self.sweep
        return (([f"data_dir={s.data_dir}"] if s.data_dir else []) + list(s.overrides)
                + list(cell.entry.overrides))

    def train_args(self, cell: Cell, model: str, samples: Path | None, resume: bool) -> list[str]:
        """A cell's `train` command: the one statement of its training settings."""
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
        if s.launch.launcher == "accelerate":  # train writes the launch config and runs accelerate launch
            argv += ["--launcher", "accelerate", "--num-processes", str(s.launch.num_processes)]
            argv += (["--deepspeed", s.launch.deepspeed] if s.launch.deepspeed else []) + (
                ["--fsdp"] if s.launch.fsdp else [])
        return argv + (["--resume"] if resume else [])

    def trained_budget(self, cell: Cell) -> int | None:
        """The completion length a cell's policy was trained to (TRL's `max_completion_length`; None for
        recipes without one): from its train.json, or, before it trained, from its resolved train command."""
        record = self.dir.train_dir(cell.id).log()
        if record is not None:
            trl = record.config.get("trl")
        else:
            try:
                argv = self.train_args(cell, self.cell_model(cell, build=False), self.split_file(cell), False)
                trl = resolve(train_request(parse_train_args(argv)))[0].trl
            except MedHarnessError:
                return None  # the dry run reports the cell's problem
        value = trl.get("max_completion_length") if isinstance(trl, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def eval_budget(self, cell: Cell, task: str) -> tuple[int | None, int | None]:
        """(the --max-new-tokens of a trained cell's evaluation on `task`, the budget it replaces): the eval
        setting, else the prompt variant's, raised to the training completion length where it is below, so a
        policy trained to think for N tokens is never cut before its answer (None, None: left as set)."""
        trained = self.trained_budget(cell)
        if trained is None:
            return self.sweep.eval.max_new_tokens, None
        prompt = eval_prompt(self.sweep, cell, task)
        configured = self.sweep.eval.max_new_tokens or load_task(
            task, {"prompt": prompt} if prompt else {}).settings().max_new_tokens
        if configured >= trained:
            return self.sweep.eval.max_new_tokens, None
        return trained, configured

    def eval_args(self, model: str, task: str, out: Path, resume: bool, baseline: bool = False,
                  prompt: str | None = None, ablate: str | None = None,
                  max_new_tokens: int | None = None) -> list[str]:
        """A `medharness run` of one model on one task (`max_new_tokens`: the budget, else the eval
        setting's)."""
        e = self.sweep.eval
        argv = ["run", "--model", model, "--tasks", task, "--output", str(out), "--no-progress",
                "--batch-size", str(e.batch_size)]
        if not baseline:
            argv += ["--backend", e.backend]
            for key, value in e.backend_options.items():
                argv += ["--backend-option", f"{key}={json.dumps(value)}"]
        subset = self.eval_subset_file(task)
        pinned = self.relative(e.samples) if e.samples else (str(subset) if subset else None)
        for flag, value in (("--limit", e.limit), ("--max-new-tokens", max_new_tokens or e.max_new_tokens),
                            ("--samples", pinned),
                            ("--data-dir", self.sweep.data_dir)):
            if value is not None:
                argv += [flag, str(value)]
        if prompt:
            argv += ["-T", f"{task}.prompt={prompt}"]
        if ablate:
            argv += ["--ablate", ablate]
        return argv + (["--resume"] if resume else [])

    def split_file(self, cell: Cell) -> Path | None:
        """A k-shot cell's training ids (None: the whole train split, `whole_split` included)."""
        k = self.sweep.kshot(cell.task, cell.shots)
        if k is None:
            return None
        return self.dir.split_file(cell.task, k, self.split_seed(cell))

    def eval_subset_file(self, task: str) -> Path | None:
        """The ids of an eval task's seeded class-balanced subset (`eval.per_class`; None: the whole split),
        the same file for every cell and reference row."""
        k = self.sweep.eval.subset_k(task)
        if k is None:
            return None
        split = load_task(task).config.split
        return self.dir.split_file(f"{task}-{split}", k, self.sweep.eval.subset_seed)

    def eval_subset_args(self, task: str, out: Path) -> list[str]:
        argv = ["split", "--task", task, "--split", load_task(task).config.split, "--kshot",
                str(self.sweep.eval.subset_k(task)), "--seed", str(self.sweep.eval.subset_seed),
                "--output", str(out)]
        return argv + (["--data-dir", self.sweep.data_dir] if self.sweep.data_dir else [])

    def subset_commands(self, tasks: list[str]) -> list[Command]:
        """The `medharness split` commands of the eval subsets of `tasks` (for --print-commands)."""
        return [Command(self.eval_subset_args(t, out)) for t in tasks
                for out in [self.eval_subset_file(t)] if out is not None]

    def cell_commands(self, cell: Cell) -> list[Command]:
        """A cell's stages as a fresh run makes them (for --print-commands): its split, train and evals (the
        model of a cell trained from another: that cell's final/, merged first where it is an adapter)."""
        split = self.split_file(cell)
        out = [Command(self.split_args(cell, split))] if split is not None else []
        out += self.subset_commands(eval_tasks(self.sweep, cell))
        out.append(Command(self.train_args(cell, self.cell_model(cell, build=False), split, False)))
        final = str(self.dir.train_dir(cell.id).final)
        return out + [Command(self.eval_args(final, task, self.dir.eval_dir(cell.id, task, folder), False,
                                             prompt=eval_prompt(self.sweep, cell, task), ablate=mode,
                                             max_new_tokens=self.eval_budget(cell, task)[0]))
                      for mode, folder in self.final_evals() for task in eval_tasks(self.sweep, cell)]

    def final_evals(self) -> list[tuple[str | None, str | None]]:
        """How a cell's final model is scored: (ablation, eval subfolder); (None, None): the plain run."""
        return [(None, None), *((mode, ablation_folder(mode)) for mode in self.sweep.eval.ablate)]

    def reference_commands(self, name: str, model: str | None, tasks: list[str]) -> list[Command]:
        """A reference row's evaluations (for --print-commands)."""
        evaluated = model or self.base_model(build=False)
        return self.subset_commands(tasks) + [
            Command(self.eval_args(evaluated, task, self.dir.reference_dir(name, task), False,
                                   baseline=model is not None, prompt=eval_prompt(self.sweep, None, task)))
            for task in tasks]

    # running
    def _call(self, command: Command, log_file: Path) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = command.argv()
        log.info("running %s", scrub(command.text()))
        with log_file.open("a", encoding="utf-8") as fh:  # recorded without credentials (core/secrets.py)
            fh.write(f"$ {scrub(' '.join(argv))}\n")
        code = self.worker.run(command.args, log_file) if self.worker and command.program is None else None
        if code is None:
            with log_file.open("a", encoding="utf-8") as fh:
                code = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0:
            tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            raise StageFailed(scrub(f"`{' '.join(argv[:4])} ...` exited with {code}; see {log_file}:\n  "
                                    + "\n  ".join(tail)))

    def _set_aside(self, folder: Path, why: str) -> None:
        moved = set_aside(folder, self.root)
        self.say(f"  {folder} is started afresh ({why}); what was there is kept in {moved}")

    def _need_resume(self, what: str, where: Path) -> None:
        if not self.resume:
            raise ConfigError(f"{what} in {where} was started before and is not finished: pass --resume to "
                              "continue it")

    def split(self, cell: Cell) -> Path | None:
        """A k-shot cell's training ids, written once by `medharness split` (None: the whole train split)."""
        out = self.split_file(cell)
        if out is not None and not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.json")
            self._call(Command(self.split_args(cell, tmp)), self.dir.logs / "splits.log")
            os.replace(tmp, out)
        return out

    def eval_subset(self, task: str) -> None:
        """An eval task's `per_class` subset, written once by `medharness split` (atomically)."""
        out = self.eval_subset_file(task)
        if out is not None and not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.json")
            self._call(Command(self.eval_subset_args(task, tmp)), self.dir.logs / "splits.log")
            os.replace(tmp, out)

    def evaluate(self, model: str, task: str, out: Path, log_file: Path, baseline: bool = False,
                 prompt: str | None = None, ablate: str | None = None,
                 max_new_tokens: int | None = None) -> None:
        """One `medharness run`, skipped when finished, resumed when started (with --resume)."""
        status = run_status(out)
        if status == "finished":
            return
        self.eval_subset(task)
        if status is not None:
            self._need_resume("the evaluation", out)
        elif out.exists():  # a folder without run.json: a run that never started
            self._set_aside(out, "it has no run.json")
        self.say(f"  eval {task} -> {out}")
        self._call(Command(self.eval_args(model, task, out, resume=status is not None, baseline=baseline,
                                          prompt=prompt, ablate=ablate, max_new_tokens=max_new_tokens)),
                   log_file)
        if run_status(out) != "finished":
            raise StageFailed(f"{out}: the run did not finish (status {run_status(out)})")

    def cell_model(self, cell: Cell, build: bool = True) -> str:
        """What a cell trains from: the base model, or its parent's final (merged when it is an adapter).
        `build` False: nothing is built or merged, and an unfinished parent's final/ is named."""
        if cell.parent is None:
            return self.base_model(build)
        parent = self.dir.train_dir(cell.parent)
        state = parent.state()
        if state.status != "finished" or state.final is None:
            if not build:
                return str(parent.final)
            raise StageFailed(f"cell {cell.id} trains from {cell.parent}, which has not finished training "
                              "(run it first: `--cell " + cell.parent + "`)")
        if not is_adapter_folder(state.final):
            return str(state.final)
        merged = self.dir.merged_dir(cell.parent)
        # merged once, atomically (child cells may run in parallel)
        if build and not (merged / "config.json").is_file():
            tmp = merged.with_name(f".merged.{os.getpid()}")
            remove_own(tmp, self.root)  # left by an earlier process with this pid
            self._call(Command(["merge", str(state.final), "--output", str(tmp)]),
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
        samples = self.split(cell)
        args = self.train_args(cell, self.cell_model(cell), samples, resume=started)
        command = Command(args[1:], TRAIN_PROGRAM) if TRAIN_PROGRAM else Command(args)
        self.say(f"  train {cell.entry.recipe} ({'resumed' if started else 'new'}) -> {out}")
        self._call(command, self.dir.cell_logs(cell.id) / "train.log")
        state = self.dir.train_dir(cell.id).state()
        if state.status != "finished" or state.final is None:
            raise StageFailed(f"{out}: training did not finish (train.json status {state.status})")
        return state.final

    def run_cell(self, cell: Cell) -> None:
        """Train (or skip), then evaluate the final checkpoint (and each checkpoint-N with checkpoints:
        all)."""
        final = self.train(cell)
        logs = self.dir.cell_logs(cell.id)
        budgets = {task: self.eval_budget(cell, task) for task in eval_tasks(self.sweep, cell)}
        for task, (budget, replaced) in budgets.items():
            if replaced is not None:
                self.say(f"  eval {task}: {budget} new tokens, the training completion length (the prompt's "
                         f"budget, {replaced}, would cut the policy's answers)")
        for mode, folder in self.final_evals():
            for task in eval_tasks(self.sweep, cell):
                self.evaluate(str(final), task, self.dir.eval_dir(cell.id, task, folder),
                              logs / f"eval-{folder + '-' if folder else ''}{task}.log",
                              prompt=eval_prompt(self.sweep, cell, task), ablate=mode,
                              max_new_tokens=budgets[task][0])
        if self.sweep.eval.checkpoints == "all":
            for ckpt in self.dir.train_dir(cell.id).checkpoints():
                for task in eval_tasks(self.sweep, cell):
                    self.evaluate(str(ckpt), task, self.dir.eval_dir(cell.id, task, ckpt.name),
                                  logs / f"eval-{ckpt.name}-{task}.log",
                                  prompt=eval_prompt(self.sweep, cell, task), max_new_tokens=budgets[task][0])

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
            run_status(self.dir.eval_dir(cell.id, t, folder)) == "finished"
            for _, folder in self.final_evals() for t in eval_tasks(self.sweep, cell))


def reference_rows(sweep: SweepConfig) -> dict[str, str | None]:
    """Reference row name -> its model: `base` -> None (the sweep's base model), `baseline-KIND` ->
    baseline:KIND."""
    rows: dict[str, str | None] = {"base": None} if sweep.base_row else {}
    for b in sweep.baselines:
        kind = b.removeprefix("baseline:")
        rows[f"baseline-{slug(kind)}"] = f"baseline:{kind}"
    return rows
