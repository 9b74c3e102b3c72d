"""The run loop: tasks -> samples -> prompts -> backend -> rows appended to the run directory.

It resumes: samples whose rows are already on disk are skipped, so a killed run started again
with `resume=True` generates each sample exactly once; with `retry_errors=True` the rows whose generation
failed (an API error after the last retry, a missing image) are dropped first and generated again.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from medharness.backends import BACKENDS, Backend, check_options
from medharness.backends.cache import ResponseCache
from medharness.backends.generate import generate_cached
from medharness.backends.inputs import ImageLoader, build_requests
from medharness.backends.ray_replicas import RayExecutor, RayReplicas, check_executor
from medharness.checkpoints.lineage import trained_from
from medharness.core.errors import ConfigError, DataError, MedHarnessError
from medharness.core.records import (
    CacheUsage,
    GenerationSettings,
    ResultRow,
    RunSettings,
    RunUsage,
    SafeName,
    Sample,
    TaskEntry,
    TaskSummary,
    TokenCount,
)
from medharness.runs.prices import cost_usd
from medharness.runs.runlog import RunDir
from medharness.scoring.recipe import Recipe, metric_is_percent, metric_records, summarise
from medharness.taskfiles import ablation
from medharness.taskfiles.splits import read_sample_ids, select_pinned
from medharness.taskfiles.task import Task, load_task, recipe_for, resolve_task_names

log = logging.getLogger(__name__)
LOCAL_MODEL_BACKENDS = ("hf", "vllm")  # they load a model folder, which may carry a training manifest
Progress = Callable[[str, int, int], None]  # (task, done, total)


def _described(name: str) -> str | None:
    return RunSettings.model_fields[name].description


class RunConfig(RunSettings):
    """Everything that decides a run's results: the `RunSettings` run.json stores (and --resume compares),
    each value checked, so the CLI and the Python API refuse the same input (the CLI names the option:
    `--limit`, `--backend-option`, ...). Not frozen, unlike the record it is stored as."""

    model_config = ConfigDict(frozen=False)

    # the checked fields (their descriptions: RunSettings')
    limit: int | None = Field(None, ge=1, description=_described("limit"))
    batch_size: int = Field(8, ge=1, description=_described("batch_size"))
    max_new_tokens: int | None = Field(None, ge=1, description=_described("max_new_tokens"))
    temperature: float | None = Field(None, ge=0, allow_inf_nan=False, description=_described("temperature"))
    max_error_rate: float = Field(0.5, ge=0, le=1, allow_inf_nan=False,
                                  description=_described("max_error_rate"))
    label: SafeName | None = Field(None, description=_described("label"))

    @field_validator("backend_options")
    @classmethod
    def _backend_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Options the chosen backend does not take are refused (`auto` on a model: hf or vllm, so options
        that one of them takes pass here, and the runner checks again once it has picked)."""
        model, backend = info.data.get("model"), info.data.get("backend")
        if not isinstance(model, str) or not isinstance(backend, str):
            return options  # model or backend already refused
        errors = []
        for name in candidate_backends(model, backend):
            try:
                check_options(name, options)
                return options
            except ConfigError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError(" / ".join(errors))
        return options


def candidate_backends(model: str, backend: str) -> tuple[str, ...]:
    """The backend(s) `pick_backend` can choose, found without importing torch: one name, or hf and vllm
    for `auto` on a model (an option either takes is accepted until the choice is made)."""
    if model.startswith("baseline:"):
        return ("baseline",)
    if backend != "auto":
        return (backend,)
    if Path(model).suffix in (".jsonl", ".json", ".csv") and Path(model).is_file():
        return ("replay",)
    return ("vllm", "hf")


def pick_backend(model: str, backend: str) -> tuple[str, str]:
    """Resolve `--backend auto` and the `baseline:` prefix -> (backend name, model argument)."""
    if backend != "auto":
        BACKENDS.get(backend)  # unknown name -> "did you mean"
    if model.startswith("baseline:"):
        if backend not in ("auto", "baseline"):
            raise ConfigError(f"--model {model} is a baseline; it cannot run on --backend {backend}")
        return "baseline", model.removeprefix("baseline:")
    if backend != "auto":
        return backend, model
    if Path(model).suffix in (".jsonl", ".json", ".csv") and Path(model).is_file():
        return "replay", model
    return ("vllm" if _vllm_usable() else "hf"), model


def _vllm_usable() -> bool:
    """vLLM is the production path when it is installed and a CUDA GPU is present."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def make_backend(config: RunConfig, executor: RayExecutor | None = None) -> Backend:
    """The run's backend, in this process, or as replicas on a Ray cluster (`executor`: `--executor ray`)."""
    name, model = pick_backend(config.model, config.backend)
    options = dict(config.backend_options)
    if name == "baseline":
        options.setdefault("seed", config.seed)
    if name == "hf":
        options.setdefault("batch_size", config.batch_size)
    if executor is not None:
        return RayReplicas(name, model, options, executor)
    return BACKENDS.get(name)(model, **options)


def load_tasks(config: RunConfig) -> list[Task]:
    tasks: list[Task] = []
    for ref in resolve_task_names(config.tasks):
        name = ref.stem if isinstance(ref, Path) else ref
        overrides = dict(config.overrides.get(name, {}))
        if config.data_dir and "data_dir" not in overrides:
            overrides["data_dir"] = config.data_dir
        task = load_task(ref, overrides)
        same = next((t for t in tasks if t.name == task.name), None)
        if same is not None and same.path.resolve() == task.path.resolve():
            continue  # the same file twice (a family and one of its tasks): run it once
        if same is not None:
            raise ConfigError(f"--tasks: two tasks are named '{task.name}' ({same.path} and {task.path}); "
                              f"their rows would share samples/{task.name}.jsonl: rename one (its `name:`)")
        tasks.append(task)
    unknown = set(config.overrides) - {t.name for t in tasks}
    if unknown:
        raise ConfigError(f"-T names task(s) {sorted(unknown)} that are not in --tasks")
    return tasks


def default_run_id(config: RunConfig) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(config.model).name or config.model).strip("-")[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug or 'model'}"


def _check_resume(run: RunDir, config: RunConfig, tasks: Sequence[Task]) -> None:
    """A run continues only with the settings and the task definitions it started with: rows of two task
    versions (or of an edited prompt, parser or filter) never share one file."""
    old, new = run.log.config.result_settings(), config.result_settings()
    diffs = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in RunConfig.RESULT_KEYS if old[k] != new[k]]
    for task in tasks:
        entry = run.log.tasks.get(task.name)
        versions = sorted({r.task_version for r in run.rows(task.name)} - {task.version})
        if versions or (entry is not None and entry.version != task.version):
            was = versions or [entry.version if entry else "?"]
            diffs.append(f"task {task.name} version: {', '.join(map(repr, was))} -> {task.version!r}")
        elif entry is not None and entry.definition not in (None, task.definition_hash):
            diffs.append(f"task {task.name} definition ({task.path}): hash {entry.definition} -> "
                         f"{task.definition_hash} (the task file changed)")
    if diffs:
        raise ConfigError(f"cannot resume {run.path}: the run was started with other settings "
                          f"({'; '.join(diffs)}); start a new run in another --output")


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`, a closed nohup session) stops a run like Ctrl-C: recorded as
    "interrupted", never left at "running". (SIGKILL cannot be caught: `--resume` continues such a run.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("stopped by SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Runner:
    """Runs one RunConfig into one run directory."""

    def __init__(self, config: RunConfig, output: Path | None = None, resume: bool = False,
                 progress: Progress | None = None, retry_errors: bool = False,
                 executor: RayExecutor | None = None) -> None:
        self.config = config
        # a wrong backend name fails before any work
        backend_name, _ = pick_backend(config.model, config.backend)
        check_options(backend_name, config.backend_options)
        self.executor = executor  # None: the model runs in this process; else replicas on a Ray cluster
        if executor is not None:
            check_executor(backend_name, config.backend_options)
        ablation.check(config.ablate)
        self.pinned = read_sample_ids(Path(config.samples_file)) if config.samples_file else None
        self.tasks = load_tasks(config)  # bad task files fail here, before any directory exists
        self.samples = {t.name: self._select(t) for t in self.tasks}
        self.images = {t.name: ImageLoader(t, self.samples[t.name], config.ablate, config.seed)
                       for t in self.tasks}
        self.recipes = {t.name: recipe_for(t) for t in self.tasks}
        for t in self.tasks:  # render once to catch template errors before the model loads
            if self.samples[t.name]:
                t.render(self.samples[t.name][0], t.settings())
        self.path = output or Path("runs") / default_run_id(config)
        self.resume = resume
        self.retry_errors = retry_errors
        if retry_errors and not resume:
            raise ConfigError("--retry-errors continues a run: it needs --resume")
        self.progress = progress or (lambda task, done, total: None)
        self.cache: ResponseCache | None = None
        self.model_calls = 0
        self.generate_s = 0.0
        self.started = False  # the run loop began (its directory records how it ended)

    def _select(self, task: Task) -> list[Sample]:
        samples = task.load_samples()
        if self.pinned is not None:
            samples = select_pinned(task.name, samples, self.pinned, Path(str(self.config.samples_file)))
        return samples[: self.config.limit] if self.config.limit else samples

    def run(self) -> RunDir:
        """Run into the run directory, holding its lock throughout (a second writer is refused).

        A directory that holds no results (a run stopped before its first sample, or killed while it was being
        created) is taken over by `--resume`. A fresh run that fails before its first row leaves no directory;
        a run that stops later is marked "failed" (or "interrupted") with the reason."""
        if self.resume and RunDir.has_results(self.path):
            run = RunDir.open(self.path, writer="run --resume")
            try:
                _check_resume(run, self.config, self.tasks)
            except BaseException:
                run.close()
                raise
        else:
            RunDir.check_new(self.path, take_over=self.resume)
            run = None
        try:
            # a model that cannot load fails before a directory exists
            backend = make_backend(self.config, self.executor)
        except BaseException:
            if run is not None:
                run.close()
            raise
        if run is None:
            run = RunDir.create(self.path, self.config, seed=self.config.seed,
                                label=self.config.label, take_over=self.resume)
        try:
            with _sigterm_interrupts():
                return self._run(run, backend)
        finally:
            backend.close()
            run.close()

    def _run(self, run: RunDir, backend: Backend) -> RunDir:
        name, model = pick_backend(self.config.model, self.config.backend)
        self.started = True
        try:
            run.set_model(backend.fingerprint, getattr(backend, "attn_implementation", None),
                          trained_from(model) if name in LOCAL_MODEL_BACKENDS else None)
            if self.config.cache and backend.cacheable:
                self.cache = ResponseCache(Path(self.config.cache_dir) if self.config.cache_dir else None)
            run.set_status("running")
            for task in self.tasks:
                self._run_task(run, backend, task)
            self._check_error_rates(run)
        except KeyboardInterrupt as exc:
            run.set_status("interrupted", f"{exc or 'stopped by the user'}; --resume continues")
            raise
        except BaseException as exc:  # recorded, then raised: run.json never stays "running"
            if not self.resume and run.discard():
                self._close_cache()
                raise  # nothing was generated: no directory is left behind
            reason = str(exc) if isinstance(exc, MedHarnessError) else f"{type(exc).__name__}: {exc}"
            run.set_status("failed", reason)
            raise
        finally:
            if run.path.is_dir():
                self._record_usage(run)
        run.set_status("finished")
        return run

    def _check_error_rates(self, run: RunDir) -> None:
        """The whole run fails when a task's generation-error rate passes --max-error-rate, however few its
        samples (during the run the check waits for 20 samples, so that one early failure does not stop
        it)."""
        failed = []
        for task in self.tasks:
            summary = run.log.tasks[task.name].summary
            if (summary is not None and summary.n
                    and summary.n_errors / summary.n > self.config.max_error_rate):
                failed.append(f"task {task.name}: {summary.n_errors} of {summary.n} samples failed")
        if failed:
            raise DataError(f"{'; '.join(failed)}: over the --max-error-rate {self.config.max_error_rate} "
                            "(generation errors, not wrong answers; see samples/<task>.jsonl)")

    def _run_task(self, run: RunDir, backend: Backend, task: Task) -> None:
        samples, recipe = self.samples[task.name], self.recipes[task.name]
        run.repair(task.name)
        if self.retry_errors:
            dropped = run.drop_rows(task.name, lambda row: row.generation.error is not None)
            if dropped:
                log.info("%s: %d failed sample(s) will be generated again", task.name, dropped)
        done = {r.sample_id for r in run.rows(task.name)}
        todo = [s for s in samples if s.id not in done]
        settings = task.settings(max_new_tokens=self.config.max_new_tokens,
                                 temperature=self.config.temperature, seed=self.config.seed)
        previous = run.log.tasks.get(task.name)
        run.set_task(task.name, self._task_entry(task, recipe).model_copy(
            update={"baseline": previous.baseline if previous else None}))
        self.progress(task.name, len(samples) - len(todo), len(samples))
        if todo:
            backend.prepare(task, samples)
            run.update_task(task.name, baseline=backend.answer_source(task.name))
        n_done, n_errors = len(samples) - len(todo), 0
        size = max(self.config.batch_size, backend.batch_size_hint)  # API backends: one batch per concurrency
        for start in range(0, len(todo), size):
            batch = todo[start: start + size]
            rows = self._batch(task, backend, recipe, batch, settings)
            run.append(task.name, rows)
            n_done += len(rows)
            n_errors += sum(1 for r in rows if r.generation.error is not None)
            self.progress(task.name, n_done, len(samples))
            if n_done >= 20 and n_errors / n_done > self.config.max_error_rate:
                raise DataError(f"task {task.name}: {n_errors} of {n_done} samples failed, over the "
                                f"--max-error-rate {self.config.max_error_rate}; see "
                                f"samples/{task.name}.jsonl")
        self._finish_task(run, task, recipe, backend)

    def _batch(self, task: Task, backend: Backend, recipe: Recipe, batch: Sequence[Sample],
               settings: GenerationSettings) -> list[ResultRow]:
        images = self.images[task.name] if backend.needs_images else None
        prompts, requests, failed = build_requests(task, batch, settings, images, backend.fingerprint)
        started = time.perf_counter()
        generated = generate_cached(backend, requests, self.cache)
        self.generate_s += time.perf_counter() - started
        self.model_calls += sum(1 for g in generated if not g.cached)
        by_id = {g.generation.sample_id: g.generation for g in generated}
        rows = []
        for sample in batch:
            gen = failed.get(sample.id) or by_id[sample.id]
            answer, scores = recipe.score(sample, gen)
            rows.append(ResultRow(task=task.name, task_version=task.version, sample=sample,
                                  prompt_hash=prompts[sample.id].hash, generation=gen, answer=answer,
                                  scores=scores))
        return rows

    def _task_entry(self, task: Task, recipe: Recipe) -> TaskEntry:
        return TaskEntry(version=task.version, prompt=task.prompt_name, convention=recipe.convention,
                         ablation=self.config.ablate, parser=recipe.parser.name,
                         group_by=list(task.config.group_by), cluster_by=task.config.cluster_by,
                         data=task.load_report, n_selected=len(self.samples[task.name]),
                         percent=metric_is_percent(recipe), metrics=metric_records(recipe),
                         path=str(task.path), definition=task.definition_hash)

    def _record_usage(self, run: RunDir) -> None:
        cache = self.cache
        run.set_usage(RunUsage(model_calls=self.model_calls, generate_s=round(self.generate_s, 3),
                               cache=None if cache is None else CacheUsage(
                                   hits=cache.hits, misses=cache.misses, path=str(cache.path))))
        self._close_cache()

    def _close_cache(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def _finish_task(self, run: RunDir, task: Task, recipe: Recipe, backend: Backend) -> TaskSummary:
        selected = {s.id for s in self.samples[task.name]}
        rows = [r for r in run.rows(task.name) if r.sample_id in selected]
        summary = summarise(rows, recipe, task.config.group_by, task.name, task.version,
                            task.config.cluster_by).model_copy(update={"n_expected": len(selected)})
        for field, groups in summary.groups.items():
            if rows and not groups:
                log.warning("task %s: no sample of %s has the group_by field '%s'; its table is empty",
                            task.name, task.load_report.get("source", "this source"), field)
        tokens = TokenCount(prompt=sum(r.generation.prompt_tokens or 0 for r in rows),
                            completion=sum(r.generation.completion_tokens or 0 for r in rows))
        cost = cost_usd(self.config.model, tokens.prompt, tokens.completion) if backend.priced else None
        run.update_task(task.name, summary=summary, tokens=tokens, cost_usd=cost)
        return summary
