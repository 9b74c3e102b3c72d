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
from medharness.cache import ResponseCache, cache_key
from medharness.judges.panel import JudgeMember
from medharness.judges.specs import JudgeInput, JudgeSpec
from medharness.prices import cost_usd
from medharness.records import Generation, GenerationSettings, Judgement, Prompt, ResultRow
from medharness.runlog import RunDir

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


class Judging:
    """Judges the rows of `run` with a panel; `run()` returns each member's usage."""

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

    # ------------------------------------------------------------------------------------------ one member
    def _member(self, member: JudgeMember, backend: Backend, usage: MemberUsage) -> None:
        spec = member.judge_spec
        cache = ResponseCache(self.cache_dir, name="verdicts") if self.cache else None
        try:
            for task in self.tasks:
                self._member_task(task, member, spec, backend, cache, usage)
        finally:
            if cache is not None:
                cache.close()

    def _member_task(self, task: str, member: JudgeMember, spec: JudgeSpec, backend: Backend,
                     cache: ResponseCache | None, usage: MemberUsage) -> None:
        rows = self.rows[task]
        done = self._already_judged(task, member, spec, backend)
        items = {r.sample_id: spec.judge_input(r) for r in rows}  # what the judge sees, once per row
        todo = [r for r in rows if (r.sample_id, text_hash(_text(items[r.sample_id]))) not in done]
        label = f"{task} · {member.name}"
        self.progress(label, len(rows) - len(todo), len(rows))
        size = max(self.batch_size, backend.batch_size_hint)
        finished = len(rows) - len(todo)
        for start in range(0, len(todo), size):
            batch = todo[start: start + size]
            judgements = self._batch(task, member, spec, backend, cache, batch, items, usage)
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

    def _batch(self, task: str, member: JudgeMember, spec: JudgeSpec, backend: Backend,
               cache: ResponseCache | None, batch: Sequence[ResultRow], items: dict[str, JudgeInput | None],
               usage: MemberUsage) -> list[Judgement]:
        settings = judge_settings(spec)
        base = {"task": task, "judge": member.name, "spec": spec.name, "prompt_hash": spec.prompt_hash,
                "model": backend.fingerprint, "settings": settings}
        out: dict[str, Judgement] = {}
        requests: list[Request] = []
        hashes: dict[str, str] = {}
        for row in batch:
            item = items[row.sample_id]
            if item is None:
                usage.skipped += 1
                out[row.sample_id] = Judgement(**base, sample_id=row.sample_id, prediction_hash=text_hash(_text(None)),
                                               note=f"nothing to judge: {spec.name} needs text this answer lacks")
                continue
            hashes[row.sample_id] = text_hash(item.prediction)
            prompt = Prompt(sample_id=row.sample_id, messages=spec.render(item), settings=settings)
            requests.append(Request(prompt=prompt))
        verdicts = []  # only replies that parsed into a verdict are cached, so a re-judge retries the failures
        for sid, (gen, cached, key) in self._generate(task, backend, cache, requests, usage).items():
            out[sid] = self._judgement(base, sid, hashes[sid], spec, gen, cached, usage)
            if not cached and not out[sid].failed:
                verdicts.append((key, gen))
        if cache is not None and verdicts:
            cache.put_many(verdicts)
        return [out[row.sample_id] for row in batch]

    @staticmethod
    def _generate(task: str, backend: Backend, cache: ResponseCache | None, requests: list[Request],
                  usage: MemberUsage) -> dict[str, tuple[Generation, bool, str]]:
        """Replies by sample id, with whether each came from the verdict cache, and its cache key."""
        keys = [cache_key(f"{backend.fingerprint}|{task}|{r.prompt.sample_id}", r.prompt, []) for r in requests]
        hits = cache.get_many(keys) if cache is not None and keys else {}
        misses = [(k, r) for k, r in zip(keys, requests, strict=True) if k not in hits]
        fresh = backend.generate([r for _, r in misses]) if misses else []
        usage.calls += len(misses)
        usage.cache_hits += len(hits)
        fresh_by_id = {g.sample_id: g for g in fresh}
        out: dict[str, tuple[Generation, bool, str]] = {}
        for key, request in zip(keys, requests, strict=True):
            sid = request.prompt.sample_id
            if key in hits:
                out[sid] = (hits[key], True, key)
            else:  # a dropped request: a failed verdict, not a crash
                out[sid] = (fresh_by_id.get(sid) or Generation(
                    sample_id=sid, text="", error="the judge backend returned no reply"), False, key)
        return out

    def _judgement(self, base: dict[str, Any], sid: str, prediction_hash: str, spec: JudgeSpec, gen: Generation,
                   cached: bool, usage: MemberUsage) -> Judgement:
        if not cached:
            usage.prompt_tokens += gen.prompt_tokens or 0
            usage.completion_tokens += gen.completion_tokens or 0
        if gen.model_version:
            usage.model_versions.add(gen.model_version)
        usage.judged += 1
        tokens = {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                  "model_version": gen.model_version, "cached": cached}
        if gen.error is not None:
            usage.failed += 1
            return Judgement(**base, sample_id=sid, prediction_hash=prediction_hash, failed=True,
                             note=f"judge call failed: {gen.error}", **tokens)
        verdict = spec.parse(gen.text)
        if verdict.failed:
            usage.failed += 1
        return Judgement(**base, sample_id=sid, prediction_hash=prediction_hash, values=verdict.values,
                         value=verdict.value, failed=verdict.failed, rationale=verdict.rationale, raw=gen.text,
                         note=verdict.note, **tokens)

    # ------------------------------------------------------------------------------------------ run.json
    def _record(self, backends: dict[str, Backend], usage: dict[str, MemberUsage]) -> None:
        from medharness.judges.summary import summarise_judgements

        info = self.run_dir.info
        members = info.setdefault("judges", {})
        for member in self.panel:
            spec, use = member.judge_spec, usage[member.name]
            entry = members.setdefault(member.name, {})
            totals = entry.get("usage", {})
            prompt = totals.get("prompt_tokens", 0) + use.prompt_tokens
            completion = totals.get("completion_tokens", 0) + use.completion_tokens
            entry.update({
                **member.public(), "fingerprint": backends[member.name].fingerprint,
                "spec_version": spec.version, "prompt_hash": spec.prompt_hash,
                "settings": judge_settings(spec).model_dump(),
                "model_versions": sorted(set(entry.get("model_versions", [])) | use.model_versions),
                "usage": {"calls": totals.get("calls", 0) + use.calls,
                          "cache_hits": totals.get("cache_hits", 0) + use.cache_hits,
                          "prompt_tokens": prompt, "completion_tokens": completion,
                          "cost_usd": cost_usd(member.model, prompt, completion)
                          if member.backend in ("openai", "gemini") else None},
            })
        for task in self.tasks:
            entry = info["tasks"].setdefault(task, {})
            entry["judges"] = summarise_judgements(self.run_dir.judgements(task))
        self.run_dir.save()


def _text(item: JudgeInput | None) -> str:
    return "" if item is None else item.prediction
