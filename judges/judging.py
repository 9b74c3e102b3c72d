"""Judging a finished run: every panel member reads every row's answer and gives a verdict.

Verdicts go to `judgements/<task>.jsonl` (appended and fsync'ed per batch, like the samples), so a killed
judging run loses at most a batch and a second `medharness judge` does only what is missing: rows already
judged by the same member (same spec prompt, same model, same prediction) are skipped, and judge failures
are retried. Replies that parsed into a verdict are kept in the verdict cache (`verdicts.sqlite` beside the
response cache), keyed on the judge's fingerprint, the spec's prompt hash, the task and sample id and the
rendered judge prompt (so a changed prediction or gold is a new key): re-judging a copied run is free.

Members run concurrently (one thread each); an API member also has its own requests in flight (its
`concurrency`), with the API backends' retry and timeout policy. A call that fails after its last retry and
a reply that is no well-formed verdict are both recorded as `failed` (unscored), never as 0 or 1.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medharness.backends import BACKENDS, Backend, Request
from medharness.backends.cache import ResponseCache, cache_key
from medharness.backends.generate import generate_cached
from medharness.core.records import Generation, GenerationSettings, JudgeEntry, Judgement, JudgeUsage, Prompt
from medharness.judges.panel import JudgeMember
from medharness.judges.specs import JudgeInput, JudgeSpec
from medharness.runs.prices import cost_usd
from medharness.runs.runlog import RunDir

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (label, done, total)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def judge_settings(spec: JudgeSpec) -> GenerationSettings:
    """Judges decode greedily, with the spec's reply length."""
    return GenerationSettings(max_new_tokens=spec.max_new_tokens, temperature=0.0, seed=0)


@dataclass
class MemberUsage:
    """One member's bill for this judging pass."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    judged: int = 0
    failed: int = 0
    skipped: int = 0
    model_versions: set[str] = field(default_factory=set)


def make_judge_backend(member: JudgeMember) -> Backend:
    options = member.backend_options()
    if member.backend == "hf":
        options.setdefault("batch_size", 8)
    return BACKENDS.get(member.backend)(member.model, **options)


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge, wherever it lives (a run's row, a training completion): `input=None` when the
    answer lacks what the spec judges (recorded as skipped, unscored)."""

    task: str
    sample_id: str
    input: JudgeInput | None


def judge_items(spec: JudgeSpec, backend: Backend, items: Sequence[JudgeItem], judge_name: str | None = None,
                cache: ResponseCache | None = None, usage: MemberUsage | None = None) -> list[Judgement]:
    """One verdict per item, in order, from `backend` judging with `spec`; no run directory involved.
    Replies that parsed into a verdict go to the verdict cache (keyed on the judge's fingerprint, task, sample
    id and rendered prompt); failures are never cached, so asking again retries them."""
    usage = usage if usage is not None else MemberUsage()
    settings = judge_settings(spec)
    base: dict[str, Any] = {"judge": judge_name or spec.name, "spec": spec.name,
                            "prompt_hash": spec.prompt_hash, "model": backend.fingerprint,
                            "settings": settings}
    out: dict[int, Judgement] = {}
    asked: list[int] = []
    requests: list[Request] = []
    for i, item in enumerate(items):
        if item.input is None:
            usage.skipped += 1
            out[i] = Judgement(**base, task=item.task, sample_id=item.sample_id,
                               prediction_hash=text_hash(""),
                               note=f"nothing to judge: {spec.name} needs text this answer lacks")
            continue
        asked.append(i)
        requests.append(Request(prompt=Prompt(sample_id=item.sample_id, messages=spec.render(item.input),
                                              settings=settings)))
    keys = [cache_key(f"{backend.fingerprint}|{items[i].task}|{r.prompt.sample_id}", r.prompt, [])
            for i, r in zip(asked, requests, strict=True)]
    generated = generate_cached(backend, requests, cache, keys=keys, store=False)
    usage.calls += sum(1 for g in generated if not g.cached)
    usage.cache_hits += sum(1 for g in generated if g.cached)
    verdicts = []  # only replies that parsed into a verdict are cached
    for i, got, key in zip(asked, generated, keys, strict=True):
        item = items[i]
        assert item.input is not None
        out[i] = _judgement(base, item, text_hash(item.input.prediction), spec,
                            got.generation, got.cached, usage)
        if not got.cached and not out[i].failed:
            verdicts.append((key, got.generation))
    if cache is not None and verdicts:
        cache.put_many(verdicts)
    return [out[i] for i in range(len(items))]


def _judgement(base: dict[str, Any], item: JudgeItem, prediction_hash: str, spec: JudgeSpec, gen: Generation,
               cached: bool, usage: MemberUsage) -> Judgement:
    if not cached:
        usage.prompt_tokens += gen.prompt_tokens or 0
        usage.completion_tokens += gen.completion_tokens or 0
    if gen.model_version:
        usage.model_versions.add(gen.model_version)
    usage.judged += 1
    fields = {**base, "task": item.task, "sample_id": item.sample_id, "prediction_hash": prediction_hash,
              "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
              "model_version": gen.model_version, "cached": cached}
    if gen.error is not None:
        usage.failed += 1
        return Judgement(**fields, failed=True, note=f"judge call failed: {gen.error}")
    verdict = spec.parse(gen.text)
    if verdict.failed:
        usage.failed += 1
    return Judgement(**fields, values=verdict.values, value=verdict.value, failed=verdict.failed,
                     rationale=verdict.rationale, raw=gen.text, note=verdict.note)


class Judging:
    """Judges the rows of `run` with a panel (a wrapper of `judge_items` over a run directory); `run()`
    returns each member's usage."""

    def __init__(self, run: RunDir, panel: Sequence[JudgeMember], tasks: Sequence[str] | None = None,
                 cache: bool = True, cache_dir: Path | None = None, batch_size: int = 8,
                 progress: Progress | None = None) -> None:
        self.run_dir = run
        self.panel = list(panel)
        self.tasks = list(tasks) if tasks else run.tasks()
        self.cache, self.cache_dir = cache, cache_dir
        self.batch_size = batch_size
        self.progress = progress or (lambda label, done, total: None)
        self.rows = {t: run.rows(t) for t in self.tasks}
        self._write = threading.Lock()

    def run(self) -> dict[str, MemberUsage]:
        backends = {m.name: make_judge_backend(m) for m in self.panel}  # a bad member fails before any work
        usage = {m.name: MemberUsage() for m in self.panel}
        try:
            with ThreadPoolExecutor(max_workers=len(self.panel), thread_name_prefix="judge") as pool:
                futures = [pool.submit(self._member, m, backends[m.name], usage[m.name]) for m in self.panel]
                for future in futures:
                    future.result()
        finally:
            for backend in backends.values():
                backend.close()
        self._record(backends, usage)
        return usage

    def _member(self, member: JudgeMember, backend: Backend, usage: MemberUsage) -> None:
        cache = ResponseCache(self.cache_dir, name="verdicts") if self.cache else None
        try:
            for task in self.tasks:
                self._member_task(task, member, backend, cache, usage)
        finally:
            if cache is not None:
                cache.close()

    def _member_task(self, task: str, member: JudgeMember, backend: Backend, cache: ResponseCache | None,
                     usage: MemberUsage) -> None:
        spec = member.judge_spec
        rows = self.rows[task]
        done = self._already_judged(task, member, spec, backend)
        items = [JudgeItem(task, r.sample_id, spec.judge_input(r)) for r in rows]  # built once per row
        todo = [i for i in items
                if (i.sample_id, text_hash(i.input.prediction if i.input else "")) not in done]
        label = f"{task} · {member.name}"
        finished = len(rows) - len(todo)
        self.progress(label, finished, len(rows))
        size = max(self.batch_size, backend.batch_size_hint)
        for start in range(0, len(todo), size):
            batch = todo[start: start + size]
            judgements = judge_items(spec, backend, batch, member.name, cache, usage)
            with self._write:
                self.run_dir.append_judgements(task, judgements)
            finished += len(batch)
            self.progress(label, finished, len(rows))

    def _already_judged(self, task: str, member: JudgeMember, spec: JudgeSpec,
                        backend: Backend) -> set[tuple[str, str]]:
        with self._write:
            previous = self.run_dir.judgements(task)
        return {(j.sample_id, j.prediction_hash) for j in previous
                if j.judge == member.name and j.spec == spec.name and j.prompt_hash == spec.prompt_hash
                and j.model == backend.fingerprint and not j.failed}

    def _clusters(self, task: str) -> dict[str, str]:
        """sample id -> the unit the task's intervals resample (its cluster_by, recorded in the run log)."""
        from medharness.scoring.recipe import cluster_of

        entry = self.run_dir.log.tasks.get(task)
        cluster_by = (entry.cluster_by if entry else None) or "image"
        return {r.sample_id: cluster_of(r.sample, cluster_by) for r in self.run_dir.rows(task)}

    def _record(self, backends: dict[str, Backend], usage: dict[str, MemberUsage]) -> None:
        """Panel members (usage summed over judging passes) and judge columns into the run log."""
        from medharness.judges.summary import summarise_judgements

        members = {}
        for member in self.panel:
            spec, use = member.judge_spec, usage[member.name]
            old = self.run_dir.log.judges.get(member.name)
            before = old.usage if old is not None else JudgeUsage()
            prompt = before.prompt_tokens + use.prompt_tokens
            completion = before.completion_tokens + use.completion_tokens
            members[member.name] = JudgeEntry(
                **member.model_dump(), fingerprint=backends[member.name].fingerprint,
                spec_version=spec.version, prompt_hash=spec.prompt_hash, settings=judge_settings(spec),
                model_versions=sorted(set(old.model_versions if old else []) | use.model_versions),
                usage=JudgeUsage(calls=before.calls + use.calls,
                                 cache_hits=before.cache_hits + use.cache_hits,
                                 prompt_tokens=prompt, completion_tokens=completion,
                                 cost_usd=cost_usd(member.model, prompt, completion)
                                 if backends[member.name].priced else None))
        columns = {task: summarise_judgements(self.run_dir.judgements(task), self._clusters(task))
                   for task in self.tasks}
        self.run_dir.set_judges(members, columns)
