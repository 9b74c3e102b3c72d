"""A finished run's numbers as boards and sweeps show them, in this one place: a task's metric on the display
scale (x100 for rates) with its interval (`metric_value`, `task_result`), and the runs of one configuration
(seeds) combined into their mean, sample std and t interval (`over_runs`).

Intervals come from the run log's summary (`ci_low`, `ci_high`, `ci_method`, `n_clusters`, written by
`medharness.core.stats`); a run log written before those fields existed falls back to 1.96 x the standard
error, and the value says which method it carries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medharness.core.records import MetricSummary, TaskEntry, TaskResult
from medharness.runs.folders import read_run

NORMAL = "normal (1.96 x standard error)"


@dataclass(frozen=True)
class Value:
    """One number of a board, on its display scale (x100 for percent metrics), with its interval."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0
    method: str | None = None  # how the interval was made; None = no interval
    n_clusters: int | None = None
    std: float | None = None  # across runs (seeds) of one row
    n_runs: int = 1

    @property
    def missing(self) -> bool:
        return self.value is None


MISSING = Value(None)


def scale_of(entry: TaskEntry, metric: str) -> float:
    return 100.0 if entry.percent.get(metric, True) else 1.0


def summary_value(m: MetricSummary, scale: float) -> Value:
    if math.isnan(m.value):
        return Value(None, n=m.n)
    low, high, method, n_clusters = m.ci_low, m.ci_high, m.ci_method, m.n_clusters
    if low is None or high is None:
        if m.stderr is None or math.isnan(m.stderr):
            low = high = method = None
        else:
            low, high, method = m.value - 1.96 * m.stderr, m.value + 1.96 * m.stderr, NORMAL
    return Value(m.value * scale, None if low is None else low * scale,
                 None if high is None else high * scale, n=m.n, method=method, n_clusters=n_clusters)


def metric_value(entry: TaskEntry, metric: str) -> Value:
    """A task's metric from the run log's summary, on the display scale, with its interval."""
    summary = entry.summary
    m = summary.metrics.get(metric) if summary else None
    if m is None:
        return MISSING
    return summary_value(m, scale_of(entry, metric))


def primary_metric(entry: TaskEntry) -> str | None:
    return entry.summary.primary if entry.summary else None


def over_runs(values: Sequence[Value]) -> Value:
    """The runs of one configuration (seeds) as one value: a single run's own value and interval; from two
    on, their mean, sample std and the t interval of the mean (`core.stats.seed_summary`)."""
    found = [v for v in values if not v.missing]
    if len(found) <= 1:
        return found[0] if found else MISSING
    from medharness.core.stats import seed_summary  # scipy: only where seeds are combined

    mean, std, interval = seed_summary([v.value for v in found if v.value is not None])
    return Value(mean, interval.low, interval.high, n=sum(v.n for v in found), method=interval.method,
                 std=std, n_runs=len(found))


def task_result(run_dir: Path, task: str, metric: str | None = None) -> TaskResult | None:
    """A finished run's task: its primary metric (`TaskSummary.primary`) or the metric labelled `metric`, as
    `metric_value` shows it; None when the run, the task's summary or that metric is missing."""
    runlog = read_run(run_dir)
    if runlog is None or runlog.status != "finished":
        return None
    entry = runlog.tasks.get(task)
    name = metric or (primary_metric(entry) if entry else None)
    if entry is None or name is None or entry.summary is None or name not in entry.summary.metrics:
        return None
    v = metric_value(entry, name)
    oracle = entry.baseline is not None and entry.baseline.kind == "oracle"
    ci = (v.low, v.high) if v.low is not None and v.high is not None else None
    return TaskResult(metric=name, value=v.value, n=v.n, model=runlog.model, oracle=oracle, ci=ci,
                      ci_method=v.method if ci else None)
