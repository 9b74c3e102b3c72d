"""A judge panel's verdict as a metric: `judge_score`, registered in the one metric registry from here.

The core never imports judges, so this module registers the metric itself, and the package names it as a
`medharness` entry point (pyproject.toml): the registry imports every entry-point module on its first miss, so
`{metric: judge_score, ...}` resolves in a task file, `medharness score`, `medharness reward` or a training
reward list, with no import of judges from the core.

    {metric: judge_score, args: {judges: "semantic_v1:openai:gpt-4o-mini"}}          # GRPO study: semantic
    {metric: judge_score, args: {judges: "rarl_v1:openai:gpt-4o-mini", field: reasoning_score,
                                 requires: reasoning}}                                  # RARL: judge form
    {metric: judge_score, args: {panel: panel.yaml, field: quality}}                   # a --judge-config file
    {name: judge_rate, args: {judges: "rarl_v1:gemini:gemini-1.5-flash",
                              field: prediction_score}}                                # task metric

`judge_rate` is `judge_score` reported as a percentage (for 0/1 verdict fields, e.g. RARL's judge columns).

Value: per sample, the mean of `field` (default: each spec's primary field) over the panel members that
scored it; None (never 0) when no member did: an unscored verdict (a reply that is not one well-formed
verdict, a call that failed after its retries), nothing to judge (`semantic_v1` without a closed `<think>`),
or a sample lacking the meta field named by `requires`. Replies that parsed are kept in the verdict cache
(`verdicts.sqlite`, `cache_dir`), so the same completion is judged once. `batch` judges many completions in
one concurrent pass (each member's backend keeps its own requests in flight); training runs it as an async
reward.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Generation, ResultRow, Sample
from medharness.scoring.metrics import METRICS, Metric

if TYPE_CHECKING:
    from medharness.backends import Backend
    from medharness.judges.panel import JudgeMember

# The panels, judging and backends are imported where a metric is computed: every command whose task file
# names a metric the core lacks loads this module (the registry's plugins), most of them never judge.

Item = tuple[Answer, Sample, str]
_backends: dict[str, Backend] = {}  # one backend per member for the process (clients, engines, rate limits)
_lock = threading.Lock()


def panel_members(judges: str | None, panel: str | None, base_url: str | None,
                  api_key_env: str | None) -> list[JudgeMember]:
    """The members named by `judges` (SPEC:BACKEND:MODEL,...) and/or `panel` (a --judge-config file)."""
    from medharness.judges.panel import load_panel, parse_judges

    if not judges and not panel:
        raise ConfigError("judge_score: name the judges (`judges: SPEC:BACKEND:MODEL,...` or `panel: FILE`)")
    members = load_panel(Path(panel)) if panel else []
    return members + (parse_judges(judges, base_url, api_key_env) if judges else [])


def _backend(member: JudgeMember) -> Backend:
    from medharness.judges.judging import make_judge_backend

    key = member.model_dump_json()
    with _lock:
        if key not in _backends:
            _backends[key] = make_judge_backend(member)
        return _backends[key]


def _row(item: Item) -> ResultRow:
    answer, sample, text = item
    return ResultRow(task=sample.task, task_version="", sample=sample, prompt_hash="", answer=answer,
                     generation=Generation(sample_id=sample.id, text=text))


def _member_values(member: JudgeMember, items: Sequence[Item], field: str | None, cache: bool,
                   cache_dir: str | None) -> list[float | None]:
    from medharness.backends.cache import ResponseCache
    from medharness.judges.judging import JudgeItem, judge_items

    spec = member.judge_spec
    name = field or spec.primary
    if name not in spec.fields:
        raise ConfigError(f"judge_score: field {name!r} is not a verdict field of {spec.name} "
                          f"({', '.join(spec.fields)})")
    store = ResponseCache(Path(cache_dir) if cache_dir else None, name="verdicts") if cache else None
    try:
        todo = [JudgeItem(s.task, s.id, spec.judge_input(_row((a, s, t)))) for a, s, t in items]
        judged = judge_items(spec, _backend(member), todo, member.name, store)
    finally:
        if store is not None:
            store.close()
    return [None if j.failed or name not in j.values else j.values[name] for j in judged]


def judge_batch(items: Sequence[Item], judges: str | None = None, panel: str | None = None,
                field: str | None = None,
                requires: str | None = None, base_url: str | None = None, api_key_env: str | None = None,
                cache: bool = True, cache_dir: str | None = None) -> list[float | None]:
    """One value per (answer, sample, text): the mean verdict of the members that scored it, else None."""
    members = panel_members(judges, panel, base_url, api_key_env)
    keep = [i for i, (_, sample, _) in enumerate(items) if requires is None or sample.meta.get(requires)]
    todo = [items[i] for i in keep]
    with ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="judge-metric") as pool:
        per_member = list(pool.map(lambda m: _member_values(m, todo, field, cache, cache_dir), members))
    out: list[float | None] = [None] * len(items)
    for pos, i in enumerate(keep):
        scored = [v[pos] for v in per_member if v[pos] is not None]
        out[i] = sum(scored) / len(scored) if scored else None  # type: ignore[arg-type]
    return out


def close_backends() -> None:
    """Close every judge backend this process opened (tests; the end of a training run)."""
    with _lock:
        for backend in _backends.values():
            backend.close()
        _backends.clear()


def judge_score(answer: Answer, sample: Sample, text: str, **args: Any) -> float | None:
    """A judge panel's mean verdict on this answer (None when unscored); see the module docstring."""
    return judge_batch([(answer, sample, text)], **args)[0]


METRICS.register("judge_score", Metric(
    name="judge_score", fn=judge_score, batch=judge_batch, percent=False,
    description="A judge panel's mean verdict (`judges: SPEC:BACKEND:MODEL,...` or `panel: FILE`); None if "
                "unscored"))
# The same for a 0/1 verdict field shown as a percentage (RARL's judge columns): share of samples judged 1.
METRICS.register("judge_rate", Metric(
    name="judge_rate", fn=judge_score, batch=judge_batch, percent=True,
    description="judge_score of a 0/1 verdict field, reported as a percentage of the samples judged"))
