"""`train --eval-every N` / `--eval-checkpoints`: score step 0 (the model training started from) and every
saved checkpoint with the harness itself (`medharness.runs.pipeline.Runner`, the code path of
`medharness run`) on held-out samples, never on the training samples.

The design: evaluation runs after training, in the main process, over the checkpoint folders training left
(`checkpoint-<step>/`, plus `final/` when its step has no checkpoint). So no process of a multi-GPU job waits
on another while a model generates, the trainer's memory is freed first, and every point is an ordinary,
resumable run directory (a rerun skips finished points and redoes one whose checkpoint or held-out ids
changed).

    OUTPUT/train_samples.json        the training sample ids (split, ids, sha256 as in the manifests) and
                                     content keys (images + question), written before training
    OUTPUT/evals/heldout-<hash>.json the evaluated ids per task: the eval split minus every training sample
    OUTPUT/evals/step-<N>/           one `medharness run` directory per point (run.json records
                                     `trained_from`)
    OUTPUT/train.json  `evals`       the settings, each point, and the curve
                                     {task: {metric, points: [[step, value]]}}
    OUTPUT/logs.jsonl                one `{"step": N, "eval": {task: {metric, value, n}}}` row per point

A held-out sample is one that is not a training sample: not the same (task, split, id), and not the same
images + question (a duplicate under another split). Ids alone are not enough: the phantom tasks' train and
test splits use the same ids for different images. Selection and a check before each run both apply the rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from medharness.checkpoints.lineage import file_hash, manifest_path, read_manifest
from medharness.core.atomic import write_text_atomic
from medharness.core.errors import ConfigError, DataError
from medharness.core.paths import set_aside
from medharness.core.records import EvalSettings, RunLog, Sample
from medharness.runs.folders import EVALS_DIR, TRAIN_SAMPLES_FILE, TrainDir, read_run
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.results import task_result
from medharness.taskfiles.task import Task, load_task, resolve_task_names
from medharness.trainers.checkpoints import samples_hash

log = logging.getLogger(__name__)


class EvalRequest(EvalSettings):
    """The `train --eval-*` flags: the shared evaluation settings (`limit`: the first N held-out samples per
    task), and when and on what to evaluate."""

    every: int | None = Field(
        None, description="save a checkpoint every N steps (sets trl.save_steps) and, after training, score "
                          "step 0 (the starting model) and every checkpoint with `run` into "
                          "OUTPUT/evals/step-<N>/")
    checkpoints: bool = Field(
        False,
        description="as --eval-every, for the checkpoints the config saves anyway (trl.save_steps unchanged)")
    tasks: str | None = Field(None, description="tasks or families to score (comma-separated; default: the "
                                                "training task)")
    split: str | None = Field(None, description="the split to score (default: each task's evaluation split); "
                                                "training samples are always left out")

    @model_validator(mode="before")
    @classmethod
    def _flags(cls, data: Any) -> Any:
        """Out-of-range values named as the flags that gave them (a ConfigError, not a validation error)."""
        for key in ("every", "limit"):
            value = data.get(key) if isinstance(data, dict) else None
            if isinstance(value, int) and value < 1:
                raise ConfigError(f"--eval-{key} must be >= 1, got {value}")
        return data

    @property
    def enabled(self) -> bool:
        return self.every is not None or self.checkpoints


def content_key(sample: Sample) -> str:
    """The same images and question: the same item, whatever its split and id."""
    return hashlib.sha256(json.dumps([list(sample.images), sample.question]).encode()).hexdigest()[:16]


@dataclass
class TrainSamples:
    """What a training run trained on (OUTPUT/train_samples.json)."""

    task: str
    split: str
    ids: list[str]
    content: list[str] = field(default_factory=list)

    def contains(self, task: str, split: str, sample: Sample) -> bool:
        same = task == self.task and split == self.split and sample.id in self._ids
        return same or content_key(sample) in self._content

    def __post_init__(self) -> None:
        self._ids, self._content = set(self.ids), set(self.content)

    @classmethod
    def create(cls, task: str, split: str, samples: Iterable[Sample], ids: Sequence[str]) -> TrainSamples:
        used = set(ids)
        return cls(task, split, sorted(used), sorted({content_key(s) for s in samples if s.id in used}))

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "sha256": samples_hash(self.ids), "ids": self.ids,
                "content": self.content}

    @classmethod
    def read(cls, output: Path) -> TrainSamples:
        file = output / TRAIN_SAMPLES_FILE
        if not file.is_file():
            raise DataError(f"{output} has no {TRAIN_SAMPLES_FILE}: cannot tell held-out samples from "
                            "training ones")
        data = json.loads(file.read_text(encoding="utf-8"))
        return cls(data["task"], data["split"], list(data["ids"]), list(data.get("content", [])))


@dataclass
class EvalPlan:
    """The resolved evaluation: which tasks, which held-out ids (written to evals/heldout-<hash>.json),
    how."""

    request: EvalRequest
    tasks: list[str]  # task names
    refs: str  # what `run --tasks` gets
    overrides: dict[str, dict[str, Any]]
    heldout: dict[str, list[str]]
    dropped: dict[str, int]  # training samples left out, per task
    split: dict[str, str]
    samples_file: Path | None = None  # evals/heldout-<hash>.json, once written

    def write(self, output: Path) -> None:
        folder = output / EVALS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.heldout, indent=1) + "\n"
        self.samples_file = folder / f"heldout-{hashlib.sha256(text.encode()).hexdigest()[:8]}.json"
        write_text_atomic(self.samples_file, text)

    def info(self) -> dict[str, Any]:
        r = self.request
        return {"every": r.every, "tasks": self.tasks, "split": self.split, "limit": r.limit,
                "backend": r.backend, "samples_file": str(self.samples_file),
                "n_samples": {t: len(ids) for t, ids in self.heldout.items()},
                "dropped_training_samples": self.dropped}


def plan(request: EvalRequest, train_ref: str, train_task: Task, data_dir: str | None,
         trained: TrainSamples) -> EvalPlan:
    """The held-out ids of every eval task (before training: a task without any fails now). `train_ref` is
    the training task as given (a name or a task YAML path)."""
    refs = request.tasks or train_ref
    tasks: list[str] = []
    overrides: dict[str, dict[str, Any]] = {}
    heldout: dict[str, list[str]] = {}
    dropped: dict[str, int] = {}
    splits: dict[str, str] = {}
    for ref in resolve_task_names(refs):
        name = ref.stem if isinstance(ref, Path) else ref
        over: dict[str, Any] = {}
        if name == train_task.name:  # the prompt variant (and data) the model was trained on
            over = {"prompt": train_task.prompt_name, **({"data_dir": data_dir} if data_dir else {})}
        if request.split:
            over["split"] = request.split
        task = load_task(ref, over)
        split = request.split or task.config.split
        samples = task.load_samples(split)
        held = [s for s in samples if not trained.contains(task.name, split, s)]
        if not held:
            raise DataError(f"--eval: task {task.name} has no held-out samples in split '{split}' "
                            f"({len(samples)} samples, all used in training); choose --eval-split")
        tasks.append(task.name)
        overrides[task.name] = over
        heldout[task.name] = [s.id for s in held[: request.limit or len(held)]]
        dropped[task.name] = len(samples) - len(held)
        splits[task.name] = split
    return EvalPlan(request, tasks, refs, {t: o for t, o in overrides.items() if o}, heldout, dropped, splits)


def points(output: Path, start_model: str) -> list[tuple[int, str]]:
    """(step, model) to score: step 0 (the model training started from), each checkpoint, and final/ when its
    step has no checkpoint (checkpoints removed by `save_total_limit` are gone and not scored)."""
    train_dir = TrainDir(output)
    out = [(0, start_model)] + [(int(c.name.rpartition("-")[2]), str(c)) for c in train_dir.checkpoints()]
    final = train_dir.final
    manifest = read_manifest(final) if final.is_dir() else None
    if manifest is not None and manifest.step is not None and manifest.step not in {s for s, _ in out}:
        out.append((manifest.step, str(final)))
    return out


def _same_point(runlog: RunLog, config: RunConfig) -> bool:
    """An earlier run of this point is still valid: the same settings (held-out ids included: their file is
    named by its content) and the same checkpoint (its manifest hash; a rewritten checkpoint is scored
    again)."""
    if runlog.config.result_settings() != config.result_settings():
        return False
    folder = Path(config.model)
    if not (folder / "medharness.json").is_file():
        return True
    lineage = runlog.trained_from
    return lineage is not None and lineage.manifest_hash == file_hash(manifest_path(folder))


def evaluate_point(eval_plan: EvalPlan, model: str, run_dir: Path, trained: TrainSamples,
                   output: Path) -> None:
    """One `Runner` run: skipped when finished, continued when started, started afresh when it is stale (the
    stale run is moved into OUTPUT/.set-aside/, not deleted)."""
    r = eval_plan.request
    config = RunConfig(model=model, backend=r.backend, tasks=eval_plan.refs, overrides=eval_plan.overrides,
                       batch_size=r.batch_size, max_new_tokens=r.max_new_tokens,
                       backend_options=dict(r.backend_options), samples_file=str(eval_plan.samples_file),
                       label=run_dir.name)
    runlog = read_run(run_dir)
    resume = runlog is not None and _same_point(runlog, config)
    if resume and runlog is not None and runlog.status == "finished":
        return
    if not resume:
        moved = set_aside(run_dir, output)
        if moved is not None:
            log.warning("%s: its settings or held-out ids changed; scored again, the old run kept in %s",
                        run_dir, moved)
    runner = Runner(config, output=run_dir, resume=resume)
    for name, samples in runner.samples.items():  # refuse, whatever selected them
        leaked = [s.id for s in samples if trained.contains(name, eval_plan.split[name], s)]
        if leaked:
            raise DataError(f"refusing to evaluate {name} on training samples {leaked[:5]}")
    runner.run()


def evaluate_checkpoints(output: Path, eval_plan: EvalPlan, start_model: str,
                         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score every point; returns the `evals` record of train.json (and writes the logs.jsonl rows)."""
    trained = TrainSamples.read(output)
    done: list[dict[str, Any]] = []
    curve: dict[str, dict[str, Any]] = {t: {"metric": None, "points": []} for t in eval_plan.tasks}
    for step, model in points(output, start_model):
        run_dir = TrainDir(output).eval_dir(step)
        evaluate_point(eval_plan, model, run_dir, trained, output)
        metrics = {t: task_result(run_dir, t) for t in eval_plan.tasks}
        done.append({"step": step, "model": model, "run": str(run_dir),
                     "eval": {t: m and m.model_dump(include={"metric", "value", "n"})
                              for t, m in metrics.items()}})
        for task, m in metrics.items():
            if m is not None:
                curve[task]["metric"] = m.metric
                curve[task]["points"].append([step, m.value])
        if progress is not None:
            shown = "  ".join(f"{t} {m.metric} {m.value:.1f} (n={m.n})" for t, m in metrics.items()
                              if m and m.value is not None)
            progress(f"eval step {step}: {shown}")
    _log_rows(output / "logs.jsonl", done)
    return {**eval_plan.info(), "points": done, "curve": curve}


def _log_rows(file: Path, done: list[dict[str, Any]]) -> None:
    """Replace the eval rows of logs.jsonl (idempotent when a resumed run scores again)."""
    kept = []
    if file.is_file():
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                if "eval" not in json.loads(line):
                    kept.append(line)
            except json.JSONDecodeError:
                continue
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    kept += [json.dumps({"step": p["step"], "time": stamp, "eval": p["eval"], "model": p["model"],
                         "run": p["run"]}) for p in done]
    file.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
