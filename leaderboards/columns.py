"""A board's columns: task x metric, task x group value (e.g. answer_type = CLOSED / OPEN), or a judge column;
each reads its `Value` from one run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from medharness.leaderboards.samples import RowCache
from medharness.leaderboards.spec import BoardSpec, ColumnSpec
from medharness.runs.results import MISSING, Value, metric_value, primary_metric, scale_of, summary_value
from medharness.runs.runlog import RunDir


@dataclass
class Column:
    label: str
    task: str
    metric: str | None  # None: each run's primary metric of the task
    group: tuple[str, str] | None = None  # (field, value)
    judge: bool = False
    higher_is_better: bool = True
    percent: bool = True

    def metric_of(self, run: RunDir) -> str | None:
        entry = run.log.tasks.get(self.task)
        return None if entry is None else (self.metric or primary_metric(entry))

    def value(self, run: RunDir, cache: RowCache) -> Value:
        entry = run.log.tasks.get(self.task)
        metric = self.metric_of(run)
        if entry is None or entry.summary is None or metric is None:
            return MISSING
        if self.judge:
            c = entry.judges.columns.get(metric) if entry.judges else None
            if c is None or c.value is None:
                return MISSING
            scale = 100.0 if c.percent else 1.0
            if c.stderr is None:
                return Value(c.value * scale, n=c.n)
            return Value(c.value * scale, (c.value - 1.96 * c.stderr) * scale,
                         (c.value + 1.96 * c.stderr) * scale, n=c.n, method="normal (1.96 x standard error)")
        if self.group is None:
            return metric_value(entry, metric)
        return _group_value(run, cache, self.task, metric, self.group, scale_of(entry, metric))


def _group_value(run: RunDir, cache: RowCache, task: str, metric: str, group: tuple[str, str],
                 scale: float) -> Value:
    """A group's value and interval as the run log's summary has them; for a run log written before groups
    had intervals, the interval a summary gets (`metric_interval`) computed here from the group's rows."""
    entry = run.log.tasks[task]
    g = ((entry.summary.groups if entry.summary else {}).get(group[0]) or {}).get(group[1])
    m = g.metrics.get(metric) if g is not None else None
    if m is None:
        return MISSING
    if m.ci_low is not None or math.isnan(m.value):
        return summary_value(m, scale)
    scores = cache.scores(run, task, metric, group)
    if len(scores.values) < 2:
        return Value(m.value * scale, n=m.n)
    from medharness.core.stats import metric_interval

    ids = list(scores.values)
    interval = metric_interval([scores.values[i] for i in ids], [scores.clusters[i] for i in ids])
    return Value(m.value * scale, interval.low * scale, interval.high * scale, n=len(ids),
                 method=interval.method, n_clusters=interval.n_clusters)


def _column_label(task: str, metric: str | None, group: tuple[str, str] | None, many_metrics: bool) -> str:
    if group is not None:
        return f"{task} · {group[1]}" + (f" · {metric}" if metric and many_metrics else "")
    return f"{task} · {metric}" if metric else task


def _groups_of(runs: Sequence[RunDir], task: str, field: str) -> list[str]:
    values: dict[str, None] = {}
    for run in runs:
        entry = run.log.tasks.get(task)
        if entry is not None and entry.summary is not None:
            values.update(dict.fromkeys(entry.summary.groups.get(field, {})))
    return sorted(values)


def _spec_columns(spec: BoardSpec, runs: Sequence[RunDir]) -> list[ColumnSpec]:
    """The spec's columns; with none, every task of the runs: its primary metric (or every metric), and the
    judge columns."""
    if spec.columns:
        return list(spec.columns)
    out: list[ColumnSpec] = []
    for run in runs:
        for task, entry in run.log.tasks.items():
            if entry.summary is None:
                continue
            names = list(entry.summary.metrics)
            for metric in names if spec.all_metrics else names[:1]:
                if not any(c.task == task and c.metric == metric for c in out):
                    out.append(ColumnSpec(task=task, metric=metric))
    return out


def resolve_columns(spec: BoardSpec, runs: Sequence[RunDir]) -> list[Column]:
    cols: list[Column] = []
    specs = _spec_columns(spec, runs)
    for c in specs:
        many = sum(1 for other in specs if other.task == c.task) > 1
        field_value = (c.group or spec.by or "").partition("=")
        field, value = field_value[0], field_value[2]
        task = c.task or ""  # "": each row's task (Row.column_for)
        direction, percent = _direction(runs, task, c.metric)
        groups = [value] if value else (_groups_of(runs, task, field) if field and task else [])
        if field and not groups and c.group is None:
            groups = []  # `by` names a field this task has no groups for: keep the overall column
        if not groups:
            cols.append(Column(c.label or _column_label(task, c.metric, None, many), task, c.metric,
                               higher_is_better=direction, percent=percent))
        for g in groups:
            label = (c.label if value else f"{c.label} · {g}") if c.label else None
            cols.append(Column(label or _column_label(task, c.metric, (field, g), many), task, c.metric,
                               (field, g), higher_is_better=direction, percent=percent))
    if not spec.columns and spec.judges:
        cols += _judge_columns(runs, spec.all_metrics)
    unique: dict[str, Column] = {}
    for col in cols:  # `by` can repeat a column the spec lists (the same task, metric and group): shown once
        if col.label in unique and (unique[col.label].task, unique[col.label].metric,
                                    unique[col.label].group) != (col.task, col.metric, col.group):
            from medharness.core.errors import ConfigError

            raise ConfigError(f"board {spec.name!r}: two different columns are labelled {col.label!r}")
        unique.setdefault(col.label, col)
    return list(unique.values())


def _direction(runs: Sequence[RunDir], task: str, metric: str | None) -> tuple[bool, bool]:
    """A column's direction and scale, from the first run that has its metric (any task, for a column that
    names none)."""
    for run in runs:
        entries = [e for t, e in run.log.tasks.items() if t == task or not task]
        for entry in entries:
            name = metric or primary_metric(entry)
            if entry.summary is not None and name in entry.summary.metrics:
                return entry.summary.metrics[name].higher_is_better, entry.percent.get(name, True)
    return True, True


def _judge_columns(runs: Sequence[RunDir], all_columns: bool) -> list[Column]:
    out: dict[str, Column] = {}
    for run in runs:
        for task, entry in run.log.tasks.items():
            for name, c in (entry.judges.columns if entry.judges else {}).items():
                if c.primary or all_columns:
                    out.setdefault(f"{task} · {name}", Column(f"{task} · {name}", task, name, judge=True,
                                                              percent=c.percent))
    return list(out.values())
