"""Metrics: per-sample `fn(answer, sample, text, **args) -> float | None`, registered with `@metric`.

Rules every metric follows:
- `None` means "does not apply to this sample" (e.g. a closed-question metric on an open question);
  such samples are left out of that metric's mean.
- An unparsed answer (`answer.value is None`) gets zero credit (0.0), or the worst value for
  lower-is-better metrics; the summary counts it in `n_unparsed`. Never a guess.
- Values of `percent=True` metrics lie in [0, 1]; reports show them x100.
- A built-in metric reads the answer, the text and the sample's target, choices and meta, never its question,
  id or image paths: re-scoring scores each distinct such input once (`scoring.DistinctScores`). A plugin's
  metric may read anything; a recipe that uses one is scored row by row.
Corpus-level metrics (e.g. quadratic weighted kappa) set `corpus=fn(pairs, **args) -> float` over
(answer, sample) pairs instead of a per-sample mean.
A per-sample metric that is cheaper or faster over many samples at once (an LLM judge panel: one concurrent
batch of calls) may also set `batch=fn(items, **args) -> [float | None, ...]` over (answer, sample, text)
triples, equal item by item to `fn`; training rewards run it concurrently with the other rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.core.registry import Registry, check_arguments

MetricFn = Callable[..., float | None]
CorpusFn = Callable[..., float]
BatchFn = Callable[..., list[float | None]]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn | None
    higher_is_better: bool = True
    percent: bool = True
    corpus: CorpusFn | None = None
    description: str = ""
    batch: BatchFn | None = None  # optional: many (answer, sample, text) at once, equal to `fn` item by item


METRICS: Registry[Metric] = Registry("metric")


def metric(
    name: str, *, higher_is_better: bool = True, percent: bool = True, corpus: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a per-sample metric function, or with `corpus=True` a corpus-level one."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fn.__doc__ or "").strip().splitlines()
        METRICS.register(
            name,
            Metric(
                name=name,
                fn=None if corpus else fn,
                corpus=fn if corpus else None,
                higher_is_better=higher_is_better,
                percent=percent,
                description=doc[0] if doc else "",
            ),
        )
        return fn

    return decorator


@dataclass(frozen=True)
class MetricSpec:
    """A metric as a task names it: registered name, arguments, and the column label."""

    label: str
    metric: Metric
    args: dict[str, Any]

    def score(self, answer: Answer, sample: Sample, text: str) -> float | None:
        assert self.metric.fn is not None
        return self.metric.fn(answer, sample, text, **self.args)


def resolve_metrics(specs: Sequence[str | dict[str, Any]]) -> list[MetricSpec]:
    """`["exact_match", {"name": "token_f1", "args": {...}, "as": "f1_set"}]` -> MetricSpecs."""
    out: list[MetricSpec] = []
    for spec in specs:
        if isinstance(spec, str):
            name, args, label = spec, {}, spec
        elif isinstance(spec, dict) and "name" in spec and set(spec) <= {"name", "args", "as"}:
            name, args = str(spec["name"]), dict(spec.get("args") or {})
            label = str(spec.get("as") or name)
        else:
            raise ConfigError(f"a metric is a name or {{name, args, as}}, got {spec!r}")
        if label == "n":
            raise ConfigError("'n' is reserved for group sizes; choose another metric label")
        found = METRICS.get(name)
        fn = found.fn or found.corpus
        if fn is not None:
            check_arguments(fn, args, 3 if found.fn else 1, f"metric '{name}'")
        out.append(MetricSpec(label=label, metric=found, args=args))
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"duplicate metric labels {labels}; give one of them `as: NAME`")
    return out
