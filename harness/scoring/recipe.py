"""Scoring: parse each generation, apply the metrics of a convention, and summarise by group.

Everything here reads `ResultRow`s only, so a run is re-scored from its `samples/*.jsonl`
without the model or the images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medharness.core import stats
from medharness.core.records import (
    Answer,
    Generation,
    GroupSummary,
    MetricSpecRecord,
    MetricSummary,
    ResultRow,
    Sample,
    TaskSummary,
)
from medharness.scoring.metrics import MetricSpec
from medharness.scoring.parsers import ParserChain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """A convention made concrete for one task: how to parse, and what to measure."""

    convention: str
    parser: ParserChain
    metrics: list[MetricSpec]

    @property
    def primary(self) -> MetricSpec:
        """The task's primary metric, its headline number on every board, curve and gate: the first metric
        listed, a corpus metric included (`TaskSummary.primary` reads it back from a run log)."""
        return self.metrics[0]

    @property
    def sample_primary(self) -> MetricSpec | None:
        """The first per-sample metric (a corpus metric like QWK has no per-sample value): what one answer is
        scored by where a single sample's score is needed (rewards, DPO's rejected answers)."""
        return next((s for s in self.metrics if s.metric.fn is not None), None)

    def score(self, sample: Sample, generation: Generation) -> tuple[Answer, dict[str, float]]:
        """Parse and score one generation. A failed generation is unparsed: zero credit, counted."""
        return self.score_text(sample, generation.text, generation.error)

    def score_text(self, sample: Sample, text: str,
                   error: str | None = None) -> tuple[Answer, dict[str, float]]:
        """`score` of a generation given as its text and error."""
        if error is not None:
            answer = Answer(value=None, parser=self.parser.name, note=f"generation failed: {error}")
        else:
            answer = self.parser(text, sample)
        scores: dict[str, float] = {}
        for spec in self.metrics:
            if spec.metric.fn is None:
                continue  # corpus metric: computed in summarise()
            value = spec.score(answer, sample, text)
            if value is not None:
                scores[spec.label] = float(value)
        return answer, scores


class DistinctScores:
    """`Recipe.score_text` over many rows, each distinct input scored once: `results` holds one
    (answer, scores, failed) per distinct input, `samples` the `Sample` it was scored on (kept only for a
    recipe with a corpus metric, which reads them again), and `which` the index of each row's result. Metas
    are kept once each too: `metas` holds each distinct meta, `meta_which` the index of each row's.

    The built-in parsers and metrics read the generation and the sample's target, choices and meta, never its
    question, id or image paths (tests/scoring/test_recipe.py holds each of them to it), so a row
    equal in those to one already scored gets its result: short answers repeat by the thousand; and rows
    equal in target, choices and meta are scored on one `Sample`, built once. Where the first PROBE_ROWS rows
    repeat less than MIN_REPEATS (free text, reasoning; golds that all differ), rows are scored one by one,
    without keys. A recipe with any other parser or metric (a plugin's, which may read anything) or with a
    `batch` metric (an LLM judge: it calls out, keyed by sample id) scores every row on its own `Sample`."""

    PROBE_ROWS = 2000
    MIN_REPEATS = 0.05

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.results: list[tuple[Answer, dict[str, float], bool]] = []
        self.samples: list[Sample] = []
        self.which: list[int] = []
        self.metas: list[dict[str, Any]] = []
        self.meta_which: list[int] = []
        self._meta_at: dict[Any, int] = {}  # a meta's key (`_frozen`) -> its index in `metas`
        keyed = memoisable(recipe)
        self._seen: dict[tuple[Any, ...], int] | None = {} if keyed else None  # an input -> its result
        self._built: dict[tuple[Any, ...], Sample] | None = {} if keyed else None  # (target, choices, meta)
        self._probe = self.PROBE_ROWS if keyed else -1  # rows left before the probe's check
        self._keep_samples = any(s.metric.corpus is not None for s in recipe.metrics)

    def add(self, sample: dict[str, Any], text: str, error: str | None) -> None:
        """One row: `sample` is a sample's fields as validated (`records.RowToScore`)."""
        meta = sample.get("meta", _NO_META)  # absent is the default {}: the same `Sample`
        meta_key = _frozen(meta)
        at = self._meta_at.get(meta_key)
        if at is None:
            at = self._meta_at[meta_key] = len(self.metas)
            self.metas.append(meta)
        self.meta_which.append(at)
        built_by = self._built
        if built_by is None:
            self._score(Sample.model_validate(sample), text, error)
            return
        target = sample["target"]
        fields = (target if type(target) is str else _frozen(target), sample.get("choices", ()), at)
        if not self._probe:
            self._probe_done()
            built_by = self._built
        self._probe -= 1
        seen = self._seen
        if seen is not None:
            key = (text, error, fields)
            hit = seen.get(key)
            if hit is not None:
                self.which.append(hit)
                return
            seen[key] = len(self.results)
        if built_by is None:
            self._score(Sample.model_validate(sample), text, error)
            return
        built = built_by.get(fields)
        if built is None:
            built = built_by[fields] = Sample.model_validate(sample)
        self._score(built, text, error)

    def _probe_done(self) -> None:
        """After PROBE_ROWS rows: drop the keys that almost never repeat (they would cost more than they
        save, and the samples' would hold a `Sample` per row)."""
        enough = self.MIN_REPEATS * self.PROBE_ROWS
        if len(self.which) - len(self.results) < enough:  # rows that took a result already made
            self._seen = None
        if self._built is not None and len(self.results) - len(self._built) < enough:  # that took a Sample
            self._built = None

    def _score(self, built: Sample, text: str, error: str | None) -> None:
        self.which.append(len(self.results))
        if self._keep_samples:
            self.samples.append(built)
        self.results.append((*self.recipe.score_text(built, text, error), error is not None))


_NO_META: dict[str, Any] = {}


def memoisable(recipe: Recipe) -> bool:
    """Whether `DistinctScores` may reuse results: only built-in parsers and metrics, none of them `batch`."""
    functions: list[Any] = [fn for _, _, fn in recipe.parser.steps]
    functions += [s.metric.fn or s.metric.corpus for s in recipe.metrics]
    return (all(s.metric.batch is None for s in recipe.metrics)
            and all(getattr(fn, "__module__", "").startswith(_BUILT_IN) for fn in functions))


_BUILT_IN = ("medharness.scoring.parsers.", "medharness.scoring.metrics.")


def _frozen(value: Any) -> Any:
    """A JSON value as a memo key: text as it is; anything else a tuple led by its type, so no two
    different values (1, 1.0 and true; "x" and ["x"]; 0.0 and -0.0, which compare equal but print apart) give
    one key."""
    kind = type(value)
    if kind is str:
        return value
    if kind is list or kind is tuple:
        return (list, *map(_frozen, value))
    if kind is dict:
        items = tuple(value.items())
        for _, v in items:
            if type(v) is not str:
                return (dict, *((k, _frozen(v)) for k, v in items))
        return (dict, *items)  # all text (the common meta): the same key, without a call per value
    if kind is float:
        return (float, repr(value))
    return (kind, value)


def rescore(rows: Iterable[ResultRow], recipe: Recipe) -> list[ResultRow]:
    out = []
    for row in rows:
        answer, scores = recipe.score(row.sample, row.generation)
        out.append(row.model_copy(update={"answer": answer, "scores": scores}))  # no re-validation of the row
    return out


# corpus metrics recompute the metric per replicate: fewer replicates than the 2000 of a mean
CORPUS_BOOT = 1000


def cluster_of(sample: Sample, cluster_by: str) -> str:
    """The unit the bootstrap resamples: the first image ("image"; items without one stand alone), the
    item itself ("item"), or the value of a `meta` field (items without it stand alone)."""
    return cluster_key(sample.id, sample.images, sample.meta, cluster_by)


def cluster_key(sample_id: str, images: Sequence[str], meta: dict[str, Any], cluster_by: str) -> str:
    """`cluster_of` from a sample's id, images and meta."""
    if cluster_by == "image" and images:
        return "image:" + images[0]
    if cluster_by not in ("image", "item") and meta.get(cluster_by) is not None:
        return f"{cluster_by}:{meta[cluster_by]}"
    return "id:" + sample_id


def _stderr(values: np.ndarray) -> float | None:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None


@dataclass(frozen=True)
class Categories:
    """Text values of many rows as codes: row i's value is `names[codes[i]]` (None: the row has none). Codes
    number the values by first appearance; they pickle as one array where a list of texts does not."""

    codes: np.ndarray  # int64 per row
    names: list[str | None]

    @classmethod
    def of(cls, values: Sequence[str | None]) -> Categories:
        index: dict[str | None, int] = {}
        codes = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, len(values))
        return cls(codes, list(index))

    @classmethod
    def concat(cls, parts: Sequence[Categories]) -> Categories:
        index: dict[str | None, int] = {}
        codes = [np.fromiter((index.setdefault(v, len(index)) for v in p.names), np.int64,
                             len(p.names))[p.codes] for p in parts]
        return cls(np.concatenate(codes) if codes else np.zeros(0, np.int64), list(index))

    def groups(self) -> dict[str, np.ndarray]:
        """Each value (None left out) -> the rows that have it, in row order; values sorted."""
        order = np.argsort(self.codes, kind="stable")
        counts = np.bincount(self.codes, minlength=len(self.names))
        ends = np.cumsum(counts)
        starts = ends - counts
        return {name: order[starts[c]:ends[c]] for c, name in sorted(
            ((c, name) for c, name in enumerate(self.names) if name is not None), key=lambda x: x[1])}


@dataclass(frozen=True)
class Scored:
    """What `summarise` reads of scored rows, as columns: built from rows, or sent by the workers of a
    parallel re-score instead of the rows themselves (arrays pickle cheaply; rows do not)."""

    clusters: Categories  # the bootstrap's unit of each row (`cluster_of`)
    parsed: np.ndarray  # bool per row
    errors: np.ndarray  # bool per row: the generation failed
    values: dict[str, np.ndarray]  # per-sample metric -> value per row (NaN: unscored or does not apply)
    present: dict[str, np.ndarray]  # per-sample metric -> bool per row: the metric applies
    meta: dict[str, Categories]  # group_by field -> the row's value as text (None: the sample lacks it)
    # (answer, sample) per row where the recipe has a corpus metric, else []
    pairs: list[tuple[Answer, Sample]]
    cluster_field_seen: bool  # some sample has the task's cluster_by field

    @classmethod
    def of(cls, rows: Sequence[ResultRow], recipe: Recipe, group_by: Sequence[str],
           cluster_by: str) -> Scored:
        samples = [r.sample for r in rows]
        return cls.build([(r.answer, r.scores, r.generation.error is not None) for r in rows], samples,
                         np.arange(len(rows)), [cluster_of(s, cluster_by) for s in samples],
                         [s.meta for s in samples], recipe, group_by, cluster_by)

    @classmethod
    def build(cls, results: Sequence[tuple[Answer, dict[str, float], bool]], samples: Sequence[Sample],
              which: np.ndarray, clusters: list[str], metas: Sequence[dict[str, Any]], recipe: Recipe,
              group_by: Sequence[str], cluster_by: str, meta_which: np.ndarray | None = None) -> Scored:
        """Columns of rows whose (answer, scores, failed) are `results[which[i]]`, scored on
        `samples[which[i]]` (`DistinctScores`), with the given clusters and metas (row i's meta is
        `metas[meta_which[i]]`, or `metas[i]` without `meta_which`): per-result and per-meta columns are built
        once, then indexed per row."""
        m = len(results)
        per_sample = [s.label for s in recipe.metrics if s.metric.corpus is None]
        absent = object()
        meta: dict[str, Categories] = {}
        for f in group_by:
            values = [fields.get(f, absent) for fields in metas]
            found = Categories.of([None if v is absent else v if type(v) is str else str(v) for v in values])
            # codes by first appearance among the distinct metas are codes by first appearance among the rows
            meta[f] = found if meta_which is None else Categories(found.codes[meta_which], found.names)
        return cls(
            clusters=Categories.of(clusters),
            parsed=np.fromiter((a.value is not None for a, _, _ in results), bool, m)[which],
            errors=np.fromiter((failed for _, _, failed in results), bool, m)[which],
            values={k: np.fromiter((sc.get(k, math.nan) for _, sc, _ in results), float, m)[which]
                    for k in per_sample},
            present={k: np.fromiter((k in sc for _, sc, _ in results), bool, m)[which] for k in per_sample},
            meta=meta,
            pairs=([(results[w][0], samples[w]) for w in which.tolist()]
                   if any(s.metric.corpus for s in recipe.metrics) else []),
            cluster_field_seen=(cluster_by in ("image", "item")
                                or any(cluster_by in fields for fields in metas)),
        )

    @classmethod
    def concat(cls, parts: Sequence[Scored]) -> Scored:
        """The parts' rows in order (parts of one task's rows, scored under one recipe)."""
        first = parts[0]
        if len(parts) == 1:
            return first
        return cls(
            clusters=Categories.concat([p.clusters for p in parts]),
            parsed=np.concatenate([p.parsed for p in parts]),
            errors=np.concatenate([p.errors for p in parts]),
            values={k: np.concatenate([p.values[k] for p in parts]) for k in first.values},
            present={k: np.concatenate([p.present[k] for p in parts]) for k in first.present},
            meta={f: Categories.concat([p.meta[f] for p in parts]) for f in first.meta},
            pairs=[x for p in parts for x in p.pairs],
            cluster_field_seen=any(p.cluster_field_seen for p in parts),
        )


def _metric_summary(spec: MetricSpec, scored: Scored, idx: np.ndarray, codes: np.ndarray) -> MetricSummary:
    """One metric over the rows `idx`: mean (or corpus value), i.i.d. stderr, the interval
    (medharness.core.stats) and the counts."""
    parsed, errors = scored.parsed, scored.errors
    common: dict[str, Any] = {"higher_is_better": spec.metric.higher_is_better}
    if spec.metric.corpus is not None:
        corpus, args = spec.metric.corpus, spec.args
        pairs = [scored.pairs[i] for i in idx]
        common["n_unparsed"] = int((~parsed[idx]).sum())
        common["n_errors"] = int(errors[idx].sum())
        if not pairs:
            return MetricSummary(value=math.nan, n=0, **common)
        n_boot = int(min(CORPUS_BOOT, max(200, 2_000_000 // len(pairs))))  # bounded: ~2M items re-scored
        ci = stats.bootstrap_interval(pairs, codes[idx], lambda p: corpus(p, **args), n_boot=n_boot)
        return MetricSummary(value=float(corpus(pairs, **args)), n=len(pairs), **common, **_ci(ci))
    v, applies = scored.values[spec.label][idx], scored.present[spec.label][idx]
    common["n_unparsed"] = int((applies & ~parsed[idx]).sum())
    common["n_errors"] = int((applies & errors[idx]).sum())
    kept_at = ~np.isnan(v)
    if not kept_at.any():
        return MetricSummary(value=math.nan, n=0, **common)
    kept = v[kept_at]
    ci = stats.metric_interval(kept, codes[idx][kept_at])
    return MetricSummary(value=float(kept.mean()), stderr=_stderr(kept), n=len(kept), **common, **_ci(ci))


def _ci(ci: stats.Interval) -> dict[str, Any]:
    if not ci.defined:
        return {"n_clusters": ci.n_clusters, "ci_method": ci.method}
    return {"ci_low": ci.low, "ci_high": ci.high, "n_clusters": ci.n_clusters, "ci_method": ci.method}


def summarise(rows: Sequence[ResultRow], recipe: Recipe, group_by: Sequence[str], task: str,
              version: str, cluster_by: str = "image") -> TaskSummary:
    """Per metric: mean (or corpus value), stderr, interval clustered by `cluster_by`, n and n_unparsed;
    then the same per group. Seeded: the same rows give the same intervals."""
    return summarise_scored(Scored.of(rows, recipe, group_by, cluster_by), recipe, task, version, cluster_by)


def summarise_scored(scored: Scored, recipe: Recipe, task: str, version: str, cluster_by: str) -> TaskSummary:
    """`summarise` of rows already reduced to their columns."""
    codes = scored.clusters.codes  # any numbering: the intervals renumber each subset's clusters themselves
    n = len(codes)
    if n and not scored.cluster_field_seen:
        log.warning("%s: no sample has the cluster_by field '%s': intervals resample items", task, cluster_by)

    def metrics(idx: np.ndarray) -> dict[str, MetricSummary]:
        return {s.label: _metric_summary(s, scored, idx, codes) for s in recipe.metrics}

    groups: dict[str, dict[str, GroupSummary]] = {}
    for field, values in scored.meta.items():
        groups[field] = {
            key: GroupSummary(n=len(members), n_unparsed=int((~scored.parsed[members]).sum()),
                              metrics=metrics(members))
            for key, members in values.groups().items()
        }
    return TaskSummary(
        task=task, task_version=version, convention=recipe.convention, n=n,
        n_unparsed=int((~scored.parsed).sum()), n_errors=int(scored.errors.sum()),
        metrics=metrics(np.arange(n)), groups=groups,
    )


def metric_is_percent(recipe: Recipe) -> dict[str, bool]:
    return {s.label: s.metric.percent for s in recipe.metrics}


def metric_records(recipe: Recipe) -> list[MetricSpecRecord]:
    """The recipe's metrics as the run log keeps them: name, arguments, label, direction."""
    return [MetricSpecRecord(label=s.label, name=s.metric.name, args=dict(s.args),
                             higher_is_better=s.metric.higher_is_better, percent=s.metric.percent)
            for s in recipe.metrics]
