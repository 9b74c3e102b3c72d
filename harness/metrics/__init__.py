"""Metrics: per-sample `fn(answer, sample, text, **args) -> float | None`, registered with `@metric`.

`base` holds the rules every metric follows, the registry (`METRICS`, `@metric`) and `resolve_metrics`;
`common` the helpers the built-ins share. The built-ins register themselves when this package imports them:
`text`, `peers` (the peers' scoring rules), `structured` (boxes, grades) and `detection` (several acceptable
answers). Built-in modules import `base` and `common`, never this package.
"""

from medharness.metrics import detection, peers, structured, text
from medharness.metrics.base import METRICS, CorpusFn, Metric, MetricFn, MetricSpec, metric, resolve_metrics

__all__ = ["METRICS", "CorpusFn", "Metric", "MetricFn", "MetricSpec", "detection", "metric", "peers",
           "resolve_metrics", "structured", "text"]
