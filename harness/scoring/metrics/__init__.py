"""Metrics: per-sample `fn(answer, sample, text, **args) -> float | None`, registered with `@metric`.

`base` holds the rules every metric follows, the registry (`METRICS`, `@metric`) and `resolve_metrics`;
`common` the helpers the built-ins share. The built-ins register themselves when this package imports them:
`text`, `peers` (the peers' scoring rules), `structured` (boxes, grades), `detection` (several acceptable
answers), `reasoning` (RARL and GRPO-study rewards: format, length, ECR, CWR) and `models` (model-backed:
BERTScore, cross-encoder similarity, perplexity; torch imported only when they score). Built-in modules import
`base` and `common`, never this package. Metrics that need an extension (a judge panel) are registered by that
extension through the same registry (`medharness.judges.metrics`, a `medharness` entry point).
"""

from medharness.scoring.metrics import detection, models, peers, reasoning, structured, text
from medharness.scoring.metrics.base import (
           METRICS,
           CorpusFn,
           Metric,
           MetricFn,
           MetricSpec,
           metric,
           resolve_metrics,
)

__all__ = ["METRICS", "CorpusFn", "Metric", "MetricFn", "MetricSpec", "detection", "metric", "models",
           "peers", "reasoning", "resolve_metrics", "structured", "text"]
