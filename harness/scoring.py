"""Scoring: parse each generation, apply the metrics of a convention, and summarise by group.

Everything here reads `ResultRow`s only, so a run is re-scored from its `samples/*.jsonl`
without the model or the images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medharness.conventions import CONVENTIONS
from medharness.metrics import MetricSpec, resolve_metrics
from medharness.parsers import ParserChain
from medharness.records import (
    Answer,
    Generation,
    MetricSpecRecord,
    MetricSummary,
    ResultRow,
    Sample,
    TaskSummary,
)

if TYPE_CHECKING:
    from medharness.task import Task


@dataclass(frozen=True)
class Recipe:
    """A convention made concrete for one task: how to parse, and what to measure."""

    convention: str
    parser: ParserChain
    metrics: list[MetricSpec]

    def score(self, sample: Sample, generation: Generation) -> tuple[Answer, dict[str, float]]:
        """Parse and score one generation. A failed generation is unparsed: zero credit, counted."""
        if generation.error is not None:
            answer = Answer(value=None, parser=self.parser.name,
                                            note=f"generation failed: {generation.error}")
        else:
            answer = self.parser(generation.text, sample)
        scores: dict[str, float] = {}
        for spec in self.metrics:
            if spec.metric.fn is None:
                continue  # corpus metric: computed in summarise()
            value = spec.score(answer, sample, generation.text)
            if value is not None:
                scores[spec.label] = float(value)
        return answer, scores


def recipe_for(task: Task, convention: str | None = None, prompt: str | None = None) -> Recipe:
    """The task's declared scoring, or a named peer convention applied to the task's samples."""
    scoring = task.config.scoring
    variant = task.config.prompts.variants[prompt or task.prompt_name]
    task_parser = variant.parser or scoring.parser
    if convention is None or convention == scoring.convention:
        named = CONVENTIONS.get(scoring.convention) if scoring.metrics is None else None
        metrics = scoring.metrics if scoring.metrics is not None else named.metrics  # type: ignore[union-attr]
        return Recipe(scoring.convention, ParserChain(task_parser),
                      resolve_metrics([*metrics, *variant.metrics]))
    conv = CONVENTIONS.get(convention)
    return Recipe(conv.name, ParserChain(conv.parser or task_parser), resolve_metrics(conv.metrics))


def rescore(rows: Iterable[ResultRow], recipe: Recipe) -> list[ResultRow]:
    out = []
    for row in rows:
        answer, scores = recipe.score(row.sample, row.generation)
        out.append(row.model_copy(update={"answer": answer, "scores": scores}))  # no re-validation of the row
    return out


def _stderr(values: np.ndarray) -> float | None:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None


def _metric_value(spec: MetricSpec, rows: Sequence[ResultRow]) -> tuple[float, float | None, int]:
    if spec.metric.corpus is not None:
        pairs = [(r.answer, r.sample) for r in rows]
        return (float(spec.metric.corpus(pairs, **spec.args)) if pairs else math.nan), None, len(pairs)
    values = np.array([r.scores[spec.label] for r in rows if spec.label in r.scores], dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, None, 0
    return float(values.mean()), _stderr(values), len(values)


def summarise(rows: Sequence[ResultRow], recipe: Recipe, group_by: Sequence[str], task: str,
              version: str) -> TaskSummary:
    """Per-metric mean (or corpus value) with its standard error, n and n_unparsed; then per group."""
    metrics: dict[str, MetricSummary] = {}
    for spec in recipe.metrics:
        value, stderr, n = _metric_value(spec, rows)
        applicable = [r for r in rows if spec.metric.corpus is not None or spec.label in r.scores]
        metrics[spec.label] = MetricSummary(
            value=value, stderr=stderr, n=n, higher_is_better=spec.metric.higher_is_better,
            n_unparsed=sum(1 for r in applicable if not r.answer.parsed),
            n_errors=sum(1 for r in applicable if r.generation.error is not None),
        )
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for field in group_by:
        buckets: dict[str, list[ResultRow]] = {}
        for row in rows:
            if field in row.sample.meta:
                buckets.setdefault(str(row.sample.meta[field]), []).append(row)
        groups[field] = {
            key: {"n": float(len(members)), **{s.label: _metric_value(s, members)[0] for s in recipe.metrics}}
            for key, members in sorted(buckets.items())
        }
    return TaskSummary(
        task=task, task_version=version, convention=recipe.convention, n=len(rows),
        n_unparsed=sum(1 for r in rows if not r.answer.parsed),
        n_errors=sum(1 for r in rows if r.generation.error is not None),
        metrics=metrics, groups=groups,
    )


def metric_is_percent(recipe: Recipe) -> dict[str, bool]:
    return {s.label: s.metric.percent for s in recipe.metrics}


def metric_records(recipe: Recipe) -> list[MetricSpecRecord]:
    """The recipe's metrics as the run log keeps them: name, arguments, label, direction."""
    return [MetricSpecRecord(label=s.label, name=s.metric.name, args=dict(s.args),
                             higher_is_better=s.metric.higher_is_better, percent=s.metric.percent)
            for s in recipe.metrics]


def summary_table(summary: TaskSummary, percent: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Rows for a Markdown table: metric, value (x100 for percent metrics), +-stderr, n, n_unparsed."""
    out = []
    for name, m in summary.metrics.items():
        scale = 100.0 if (percent or {}).get(name, True) else 1.0
        out.append({
            "task": summary.task, "metric": name,
            "value": None if math.isnan(m.value) else round(m.value * scale, 2),
            "stderr": None if m.stderr is None else round(m.stderr * scale, 2),
            "n": m.n, "n_unparsed": m.n_unparsed,
        })
    return out
