"""Judge columns for run.json and the leaderboard: per-judge means and panel aggregates.

Columns, beside (never instead of) the rule-based metrics:

    judge:<name>:<field>               mean verdict of one judge over the samples it scored
    panel:<spec>:<field>:majority      per sample, the verdict a strict majority of the scoring judges gave
                                       (a tie is unscored), then the mean over samples
    panel:<spec>:<field>:mean          per sample, the mean verdict of the scoring judges, then the mean

Panels are the judges of one spec (two or more). An unscored verdict (a judge failure, or nothing to
judge) is left out of the mean and counted in `n_unscored` / `n_failed`: it never counts as 0 or 1.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

import pandas as pd

from medharness.core import stats
from medharness.core.records import JudgeColumn, Judgement, TaskJudges
from medharness.judges.specs import get_spec


def latest(judgements: Iterable[Judgement]) -> dict[tuple[str, str], Judgement]:
    """The last verdict per (sample id, judge): a re-judged sample's newer line wins."""
    out: dict[tuple[str, str], Judgement] = {}
    for j in judgements:
        out[(j.sample_id, j.judge)] = j
    return out


def verdict_frame(judgements: Iterable[Judgement], field: str | None = None) -> dict[str, pd.DataFrame]:
    """spec -> DataFrame (index sample id, one column per judge, NaN = unscored) of `field` (default: the
    spec's primary field)."""
    cells: dict[str, dict[str, dict[str, float]]] = {}
    for (sid, judge), j in latest(judgements).items():
        name = field or get_spec(j.spec).primary
        value = j.values.get(name) if not j.failed else None
        cells.setdefault(j.spec, {}).setdefault(judge, {})[sid] = math.nan if value is None else float(value)
    return {spec: pd.DataFrame(cols).sort_index().sort_index(axis=1) for spec, cols in sorted(cells.items())}


def _column(values: pd.Series, percent: bool, primary: bool, n_failed: int = 0,
            clusters: Mapping[str, str] | None = None) -> JudgeColumn:
    """Mean of the scored verdicts (index: sample id) with its interval
    (medharness.core.stats.metric_interval, clustered like the task's metrics when `clusters` maps sample ids
    to clusters)."""
    scored = values.dropna()
    n = int(scored.size)
    stderr = float(scored.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    ci = {}
    if n:
        units = [clusters.get(str(i), f"id:{i}") for i in scored.index] if clusters is not None else None
        interval = stats.metric_interval(scored.to_numpy(dtype=float), units)
        ci = {"ci_low": interval.low, "ci_high": interval.high, "n_clusters": interval.n_clusters,
              "ci_method": interval.method}
    return JudgeColumn(value=float(scored.mean()) if n else None, stderr=stderr, n=n,
                       n_unscored=int(values.size - n), n_failed=n_failed, percent=percent,
                       primary=primary, **ci)


def majority(row: pd.Series) -> float:
    votes = Counter(row.dropna().tolist())
    if not votes:
        return math.nan
    value, count = votes.most_common(1)[0]
    return float(value) if count * 2 > sum(votes.values()) else math.nan


def summarise_judgements(judgements: list[Judgement],
                         clusters: Mapping[str, str] | None = None) -> TaskJudges:
    """A task's judge columns (value, stderr, interval, n, n_unscored, n_failed, percent, primary) and its
    judges. `clusters`: sample id -> the unit its interval resamples (scoring.cluster_of); None: items."""
    final = latest(judgements)
    columns: dict[str, JudgeColumn] = {}
    by_judge: dict[str, list[Judgement]] = {}
    for (_, judge), j in sorted(final.items()):
        by_judge.setdefault(judge, []).append(j)
    for judge, items in by_judge.items():
        spec = get_spec(items[0].spec)
        failed = sum(j.failed for j in items)
        for field in spec.fields:
            values = pd.Series([math.nan if j.failed or field not in j.values else j.values[field]
                                for j in items],
                               index=[j.sample_id for j in items], dtype=float)
            columns[f"judge:{judge}:{field}"] = _column(values, spec.scale == "binary", field == spec.primary,
                                                        failed, clusters)
    for spec_name, frame in verdict_frame(judgements).items():
        if frame.shape[1] < 2:
            continue
        spec = get_spec(spec_name)
        binary = spec.scale == "binary"
        columns[f"panel:{spec_name}:{spec.primary}:majority"] = _column(frame.apply(majority, axis=1), binary,
                                                                        True, clusters=clusters)
        columns[f"panel:{spec_name}:{spec.primary}:mean"] = _column(frame.mean(axis=1, skipna=True), binary,
                                                                    True, clusters=clusters)
    return TaskJudges(columns=columns, judges=sorted(by_judge))
