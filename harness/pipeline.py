"""The run loop: tasks -> samples -> prompts -> backend -> rows appended to the run directory.

It resumes: samples whose rows are already on disk are skipped, so a killed run started again
with `resume=True` generates each sample exactly once; with `retry_errors=True` the rows whose generation
failed (an API error after the last retry, a missing image) are dropped first and generated again.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from medharness import ablation
from medharness.backends import BACKENDS, Backend, Request
from medharness.cache import ResponseCache, cache_key
from medharness.errors import ConfigError, DataError, MedHarnessError
from medharness.prices import cost_usd
from medharness.records import Generation, ResultRow, Sample, TaskSummary
from medharness.runlog import RunDir
from medharness.scoring import Recipe, metric_is_percent, recipe_for, summarise
from medharness.splits import read_sample_ids, select_pinned
from medharness.task import Task, load_task, resolve_task_names

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (task, done, total)


class RunConfig(BaseModel):
    """Everything that decides a run's results; stored in run.json and compared on --resume."""

    model_config = ConfigDict(extra="forbid")

    model: str
    backend: str = "auto"
    tasks: str
    data_dir: str | None = None
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)  # task -> {key: value}
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int | None = None
    temperature: float | None = None
    seed: int = 0
    backend_options: dict[str, Any] = Field(default_factory=dict)
    max_error_rate: float = 0.5
    ablate: str | None = None  # blank | noise | shuffle: replace every image (see ablation.py)
    samples_file: str | None = None  # a pinned list of sample ids (see splits.py)
    cache: bool = True  # reuse generations from the response cache (see cache.py)
    cache_dir: str | None = None

    RESULT_KEYS: ClassVar[tuple[str, ...]] = ("model", "backend", "tasks", "data_dir", "overrides", "limit",
                                              "max_new_tokens", "temperature", "seed", "ablate", "samples_file")


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


def make_backend(config: RunConfig) -> Backend:
    name, model = pick_backend(config.model, config.backend)
    options = dict(config.backend_options)
    if name == "baseline":
        options.setdefault("seed", config.seed)
    if name == "hf":
        options.setdefault("batch_size", config.batch_size)
    return BACKENDS.get(name)(model, **options)


def load_tasks(config: RunConfig) -> list[Task]:
    tasks = []
    for ref in resolve_task_names(config.tasks):
        name = ref.stem if isinstance(ref, Path) else ref
        overrides = dict(config.overrides.get(name, {}))
        if config.data_dir and "data_dir" not in overrides:
            overrides["data_dir"] = config.data_dir
        tasks.append(load_task(ref, overrides))
    unknown = set(config.overrides) - {t.name for t in tasks}
    if unknown:
        raise ConfigError(f"-T names task(s) {sorted(unknown)} that are not in --tasks")
    return tasks


def default_run_id(config: RunConfig) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(config.model).name or config.model).strip("-")[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug or 'model'}"


def _check_resume(run: RunDir, config: RunConfig) -> None:
    old = run.info.get("config", {})
    new = config.model_dump()
    diffs = [k for k in RunConfig.RESULT_KEYS if old.get(k) != new.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs)
        raise ConfigError(f"cannot resume {run.path}: the run was started with other settings ({detail})")


class Runner:
    """Runs one RunConfig into one run directory."""

    def __init__(self, config: RunConfig, output: Path | None = None, resume: bool = False,
                 progress: Progress | None = None, retry_errors: bool = False) -> None:
        self.config = config
        pick_backend(config.model, config.backend)  # a wrong backend name fails before any work
        ablation.check(config.ablate)
        self.pinned = read_sample_ids(Path(config.samples_file)) if config.samples_file else None
        self.tasks = load_tasks(config)  # bad task files fail here, before any directory exists
        self.samples = {t.name: self._select(t) for t in self.tasks}
        self.partners = {t.name: ablation.partners([s.id for s in self.samples[t.name]], config.seed)
                         for t in self.tasks} if config.ablate == "shuffle" else {}
        self.recipes = {t.name: recipe_for(t) for t in self.tasks}
        for t in self.tasks:  # render once to catch template errors before the model loads
            if self.samples[t.name]:
                t.render(self.samples[t.name][0], t.settings())
        self.by_id = {t.name: {s.id: s for s in self.samples[t.name]} for t in self.tasks}
        self.path = output or Path("runs") / default_run_id(config)
        self.resume = resume
        self.retry_errors = retry_errors
        if retry_errors and not resume:
            raise ConfigError("--retry-errors continues a run: it needs --resume")
        self.progress = progress or (lambda task, done, total: None)
        self.cache: ResponseCache | None = None
        self.model_calls = 0

    def _select(self, task: Task) -> list[Sample]:
        samples = task.load_samples()
        if self.pinned is not None:
            samples = select_pinned(task.name, samples, self.pinned, Path(str(self.config.samples_file)))
        return samples[: self.config.limit] if self.config.limit else samples

    def _images(self, task: Task, sample: Sample, refs: list[str]) -> list[Any]:
        """Load a prompt's images, replaced as `--ablate` asks."""
        mode, seed = self.config.ablate, self.config.seed
        if mode == "shuffle":
            partner = self.by_id[task.name][self.partners[task.name][sample.id]]
            refs = list(partner.images[: len(refs)])
        images = [task.open_image(ref) for ref in refs]
        if mode == "blank":
            return [ablation.blank(im) for im in images]
        if mode == "noise":
            return [ablation.noise(im, seed, f"{sample.id}/{i}") for i, im in enumerate(images)]
        return images

    def run(self) -> RunDir:
        if self.resume:
            run = RunDir.open(self.path)
            _check_resume(run, self.config)
        else:
            run = RunDir.create(self.path, self.config.model_dump())
        try:
            backend = make_backend(self.config)
        except MedHarnessError:
            if not self.resume:
                run.discard()
            raise
        run.info["model"] = backend.fingerprint
        if self.config.cache and backend.cacheable:
            self.cache = ResponseCache(Path(self.config.cache_dir) if self.config.cache_dir else None)
        run.set_status("running")
        try:
            for task in self.tasks:
                self._run_task(run, backend, task)
        except KeyboardInterrupt:
            run.set_status("interrupted", "stopped by the user; --resume continues")
            raise
        except MedHarnessError as exc:
            run.set_status("failed", str(exc))
            raise
        finally:
            backend.close()
            self._record_usage(run)
        run.set_status("finished")
        return run

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
        self._record_task(run, task, recipe)
        self.progress(task.name, len(samples) - len(todo), len(samples))
        if todo:
            backend.prepare(task, samples)
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
                                f"--max-error-rate {self.config.max_error_rate}; see samples/{task.name}.jsonl")
        self._finish_task(run, task, recipe)

    def _batch(self, task: Task, backend: Backend, recipe: Recipe, batch: Sequence[Sample],
               settings: Any) -> list[ResultRow]:
        prompts = {s.id: task.render(s, settings) for s in batch}
        failed: dict[str, Generation] = {}
        requests: list[Request] = []
        for sample in batch:
            prompt = prompts[sample.id]
            try:
                images = self._images(task, sample, prompt.image_refs()) if backend.needs_images else []
            except DataError as exc:
                failed[sample.id] = Generation(sample_id=sample.id, text="", model=backend.fingerprint,
                                               error=f"image: {exc}")
                continue
            requests.append(Request(prompt=prompt, images=images))
        generated = self._generate(backend, requests)
        rows = []
        for sample in batch:
            gen = failed.get(sample.id) or generated.get(sample.id) or Generation(
                sample_id=sample.id, text="", model=backend.fingerprint, error="backend returned no generation")
            answer, scores = recipe.score(sample, gen)
            rows.append(ResultRow(task=task.name, task_version=task.version, sample=sample,
                                  prompt_hash=prompts[sample.id].hash, generation=gen, answer=answer,
                                  scores=scores))
        return rows

    def _generate(self, backend: Backend, requests: list[Request]) -> dict[str, Generation]:
        """Generations by sample id: from the response cache where possible, else from the backend."""
        if not requests:
            return {}
        if self.cache is None or not backend.cacheable:
            self.model_calls += len(requests)
            return {g.sample_id: g for g in backend.generate(requests)}
        keys = [cache_key(backend.fingerprint, r.prompt, r.images) for r in requests]
        hits = self.cache.get_many(keys)
        misses = [(k, r) for k, r in zip(keys, requests, strict=True) if k not in hits]
        fresh = backend.generate([r for _, r in misses]) if misses else []
        self.model_calls += len(misses)
        self.cache.put_many((k, g) for (k, _), g in zip(misses, fresh, strict=True))
        out = {g.sample_id: g for g in fresh}
        for key, request in zip(keys, requests, strict=True):
            if key in hits:
                out[request.prompt.sample_id] = hits[key].model_copy(update={"sample_id": request.prompt.sample_id})
        return out

    def _record_task(self, run: RunDir, task: Task, recipe: Recipe) -> None:
        entry = run.info["tasks"].setdefault(task.name, {})
        entry.update({"version": task.version, "prompt": task.prompt_name, "convention": recipe.convention,
                      "ablation": self.config.ablate,
                      "parser": recipe.parser.name, "group_by": task.config.group_by,
                      "data": task.load_report, "n_selected": len(self.samples[task.name]),
                      "percent": metric_is_percent(recipe), "path": str(task.path)})
        run.save()

    def _record_usage(self, run: RunDir) -> None:
        cache = self.cache
        run.info["usage"] = {
            "model_calls": self.model_calls,
            "cache": None if cache is None else {"hits": cache.hits, "misses": cache.misses, "path": str(cache.path)},
        }
        if cache is not None:
            cache.close()
            self.cache = None

    def _finish_task(self, run: RunDir, task: Task, recipe: Recipe) -> TaskSummary:
        selected = {s.id for s in self.samples[task.name]}
        rows = [r for r in run.rows(task.name) if r.sample_id in selected]
        summary = summarise(rows, recipe, task.config.group_by, task.name, task.version)
        run.info["tasks"][task.name]["summary"] = summary.model_dump()
        prompt_tokens = sum(r.generation.prompt_tokens or 0 for r in rows)
        completion_tokens = sum(r.generation.completion_tokens or 0 for r in rows)
        run.info["tasks"][task.name]["tokens"] = {"prompt": prompt_tokens, "completion": completion_tokens}
        api = pick_backend(self.config.model, self.config.backend)[0] in ("openai", "gemini")
        run.info["tasks"][task.name]["cost_usd"] = \
            cost_usd(self.config.model, prompt_tokens, completion_tokens) if api else None
        run.save()
        return summary
