"""Intervals and paired tests for every number medharness prints.

Who computes what (library where one exists):
    wilson_interval     written here: statsmodels proportion_confint(method="wilson")'s formula, bit for bit
                        (the tests compare), with scipy.special's normal quantile (at level 0.95 its value,
                        Z_95); importing statsmodels for it cost ~1 s of every `run` for microseconds of
                        arithmetic
    seed_summary        scipy.stats.t (interval of the mean over seeds)
    holm                statsmodels multipletests(method="holm")
    McNemar (exact)     statsmodels.stats.contingency_tables.mcnemar(exact=True), independent items
    McNemar (clustered) written here: Durkalski et al. (2003), Stat Med 22:2417-2428; no library in our
                        dependencies has it. It equals the (uncorrected) McNemar statistic when every
                        cluster holds one item.
    paired t            scipy.stats.ttest_1samp on per-cluster totals of the differences (per item when
                        items are independent)
    cluster-robust t    written here (the sandwich formula for a mean, over > 5000 clusters), checked against
                        statsmodels OLS(cov_type="cluster") in the tests; its t quantile is scipy.special's
                        stdtrit, which scipy.stats.t.ppf calls
    bootstrap           written here, vectorised with numpy: scipy.stats.bootstrap resamples items only,
                        not clusters, and calls the statistic per replicate.

The clustered bootstrap resamples whole clusters (e.g. every question on one image) with replacement; a
replicate's mean is the ratio estimator sum(values in drawn clusters) / (items in drawn clusters).
Everything is seeded: the same inputs and seed give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medharness.core.errors import DataError

# scipy.stats and statsmodels are imported inside the functions that use them: together they take ~1 s to
# load, and scoring imports this module on every command (the bootstrap itself needs numpy only).

NAN = math.nan
BOOTSTRAP = "bootstrap-percentile"
WILSON = "wilson"
Z_95 = 1.959963984540054  # -ndtri((1 - 0.95) / 2), the Wilson interval's at level 0.95 (a test compares)
BOOTSTRAP_MAX_CLUSTERS = 5000  # more clusters: the cluster-robust t interval (same answer, ~50x cheaper)
_CHUNK = 1 << 22  # cluster draws per vectorised block (bounds memory at ~32 MB of indices)


@dataclass(frozen=True)
class Interval:
    """A confidence interval with how it was made: `method` and the number of independent units."""

    low: float
    high: float
    method: str
    n_clusters: int
    level: float = 0.95

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


@dataclass(frozen=True)
class Paired:
    """b minus a on the same items: mean difference, its clustered bootstrap interval, the test's p-value."""

    diff: float
    low: float
    high: float
    p_value: float | None
    test: str
    effect_size: float | None  # Cohen's g (binary, signed toward b) or Cohen's d_z (continuous)
    n: int
    n_clusters: int
    mean_a: float = NAN
    mean_b: float = NAN
    level: float = 0.95


def preload() -> None:
    """Import what the intervals import on first use (scipy.special, ~0.15 s), for a caller with time to
    spare before it summarises (re-scoring, while its workers score)."""
    import scipy.special  # noqa: F401


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")


def cluster_codes(clusters: Sequence[Any] | None, n: int) -> np.ndarray:
    """Integer cluster code per item (0..K-1, by first appearance); each item its own cluster for None."""
    if clusters is None:
        return np.arange(n)
    if len(clusters) != n:
        raise DataError(f"{len(clusters)} cluster labels for {n} values")
    labels = clusters if isinstance(clusters, np.ndarray) and clusters.dtype.kind in "iu" else \
        np.asarray([str(c) for c in clusters])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber clusters by first appearance: stable across label sets
    return order[codes]


def _draws(rng: np.random.Generator, k: int, n_boot: int) -> Any:
    """Yield blocks of (rows, k) cluster indices, k draws with replacement per replicate."""
    per_block = max(1, _CHUNK // max(k, 1))
    dtype = np.int32 if k < 2**31 else np.int64  # int32: half the memory traffic, twice the speed
    for start in range(0, n_boot, per_block):
        yield rng.integers(0, k, size=(min(per_block, n_boot - start), k), dtype=dtype)


def _percentile(reps: np.ndarray, level: float) -> tuple[float, float]:
    reps = reps[~np.isnan(reps)]  # undefined replicates (e.g. a corpus metric on one class) are dropped
    if reps.size == 0:
        return NAN, NAN
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def mean_replicates(values: np.ndarray, codes: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of the mean, resampling clusters: sum of drawn totals / drawn item counts.

    The gathers run in float32 (a relative error of ~1e-7 on a replicate, far below the resampling noise):
    they are most of the cost, and float32 halves it."""
    k = int(codes.max()) + 1 if codes.size else 0
    totals = np.bincount(codes, weights=values, minlength=k).astype(np.float32)
    sizes = np.bincount(codes, minlength=k).astype(np.float32)
    rng = np.random.default_rng(seed)
    if k == codes.size:  # every cluster one item: the denominator is always k
        return np.concatenate([totals[idx].sum(axis=1, dtype=np.float64) / k
                               for idx in _draws(rng, k, n_boot)])
    return np.concatenate([totals[idx].sum(axis=1, dtype=np.float64)
                           / sizes[idx].sum(axis=1, dtype=np.float64)
                           for idx in _draws(rng, k, n_boot)])


def _is_mean(statistic: Callable[..., Any]) -> bool:
    return statistic is np.mean or statistic is np.average


def bootstrap_interval(values: Sequence[Any] | np.ndarray, clusters: Sequence[Any] | None = None,
                       statistic: Callable[..., Any] = np.mean, *, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of `statistic(values)`, resampling `clusters` (items when None).

    With `statistic=np.mean` (the default) `values` are numbers and the replicates are vectorised. Any other
    statistic is called once per replicate with the resampled values (the items of each drawn cluster, as
    often as it was drawn): a list, or an array when `values` is one. So `values` may be rows, e.g.
    (answer, sample) pairs for a corpus metric such as QWK or BLEU, or `np.arange(n)` for a statistic of
    item indices. A replicate may return NaN where it is undefined: it is dropped.
    """
    _check_level(level)
    return _bootstrap(values, cluster_codes(clusters, len(values)), statistic, n_boot, seed, level)


def _bootstrap(values: Sequence[Any] | np.ndarray, codes: np.ndarray, statistic: Callable[..., Any],
               n_boot: int, seed: int, level: float) -> Interval:
    n = len(values)
    k = int(codes.max()) + 1 if n else 0
    if n == 0 or n_boot <= 0:
        return Interval(NAN, NAN, BOOTSTRAP, k, level)
    if _is_mean(statistic):
        arr = np.asarray(values, dtype=float)
        if np.isnan(arr).any():
            raise DataError("values contain NaN: drop unscored items before the bootstrap")
        reps = mean_replicates(arr, codes, n_boot, seed)
    else:
        rng = np.random.default_rng(seed)
        order = np.argsort(codes, kind="stable")  # items grouped by cluster, clusters in code order
        starts = np.searchsorted(codes[order], np.arange(k + 1))
        reps = np.empty(n_boot)
        for b in range(n_boot):
            drawn = rng.integers(0, k, size=k, dtype=np.int32 if k < 2**31 else np.int64)
            idx = drawn if k == n else np.concatenate([order[starts[c]:starts[c + 1]] for c in drawn])
            reps[b] = float(statistic(values[idx] if isinstance(values, np.ndarray)
                                      else [values[i] for i in idx]))
    low, high = _percentile(reps, level)
    return Interval(low, high, BOOTSTRAP, k, level)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for successes / n (independent items): never 0 +- 0 at 0% or 100%."""
    _check_level(level)
    if n <= 0:
        return Interval(NAN, NAN, WILSON, 0, level)
    if not 0 <= successes <= n:
        raise DataError(f"{successes} successes out of {n}")
    if level == 0.95:
        crit = Z_95
    else:
        from scipy.special import ndtri  # ~0.2 s to import; statsmodels ~1.1 s

        crit = float(-ndtri((1 - level) / 2.0))
    crit2 = crit**2
    share = successes / n
    denom = 1 + crit2 / n
    centre = (share + crit2 / (2 * n)) / denom
    half = crit * math.sqrt(share * (1.0 - share) / n + crit2 / (4.0 * n**2)) / denom
    # no 1e-18
    low, high = (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)
    return Interval(low, high, WILSON, n, level)


def is_binary(values: np.ndarray) -> bool:
    return bool(values.size) and bool(np.isin(values, (0.0, 1.0)).all())


def metric_interval(values: Sequence[float] | np.ndarray, clusters: Sequence[Any] | None = None, *,
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """The interval a per-sample metric's mean gets in a run summary.

    Wilson for a 0/1 metric on independent items (every cluster one item); otherwise the clustered
    percentile bootstrap, or beyond BOOTSTRAP_MAX_CLUSTERS clusters (where the bootstrap's cost grows and its
    distribution is normal anyway) the cluster-robust t interval. A 0/1 metric whose clustered bootstrap
    cannot vary (all items equal) falls back to Wilson on the number of clusters, a conservative effective
    sample size ("wilson-clusters").
    """
    arr = np.asarray(values, dtype=float)
    codes = cluster_codes(clusters, len(arr))
    k = int(codes.max()) + 1 if arr.size else 0
    if is_binary(arr) and k == arr.size:
        return wilson_interval(int(arr.sum()), int(arr.size), level)
    _check_level(level)
    if k > BOOTSTRAP_MAX_CLUSTERS and np.ptp(arr) > 0:
        return cluster_robust_interval(arr, codes, level)
    interval = _bootstrap(arr, codes, np.mean, n_boot, seed, level)
    if is_binary(arr) and np.ptp(arr) == 0:
        w = wilson_interval(int(arr[0]) * k, k, level)
        return Interval(w.low, w.high, "wilson-clusters", k, level)
    return interval


def cluster_robust_interval(values: np.ndarray, codes: np.ndarray, level: float = 0.95) -> Interval:
    """The mean's t interval (G - 1 degrees of freedom) with the cluster-robust sandwich standard error,
    sqrt(G / (G - 1) * sum_g (sum_{i in g} (y_i - mean))^2) / n: what statsmodels OLS on a constant with
    cov_type="cluster" gives. Written here because that fit costs ~0.15 s per call at 20,000 rows for a
    three-line formula; the tests check it against statsmodels. The t quantile is scipy.special's `stdtrit`,
    which `scipy.stats.t.ppf` calls: the same number without importing scipy.stats (~0.5 s, the largest cost
    of `score RUN_DIR` before)."""
    from scipy.special import stdtrit

    k, n = int(codes.max()) + 1, len(values)
    resid = np.bincount(codes, weights=values - values.mean(), minlength=k)
    se = math.sqrt(k / (k - 1) * float((resid**2).sum())) / n
    half = float(stdtrit(k - 1, (1 + level) / 2)) * se
    return Interval(float(values.mean()) - half, float(values.mean()) + half, "cluster-robust-t", k, level)


def _aligned(a: Mapping[str, float], b: Mapping[str, float],
             clusters: Mapping[str, str] | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise DataError(
            "the two runs were not scored on the same items: "
            f"{len(only_a)} id(s) only in the first (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in the second (e.g. {only_b[:3]})")
    ids = sorted(a)
    if not ids:
        raise DataError("no items to compare")
    if clusters is not None and (missing := [i for i in ids if i not in clusters]):
        raise DataError(f"{len(missing)} id(s) have no cluster (e.g. {missing[:3]})")
    va, vb = np.array([a[i] for i in ids], dtype=float), np.array([b[i] for i in ids], dtype=float)
    if np.isnan(va).any() or np.isnan(vb).any():
        raise DataError("a compared value is NaN: compare only scored items")
    return ids, va, vb


def clustered_mcnemar(a: np.ndarray, b: np.ndarray, codes: np.ndarray) -> float:
    """Durkalski et al. (2003): X2 = (sum_k (b_k - c_k))^2 / sum_k (b_k - c_k)^2 on 1 df, where b_k and c_k
    count cluster k's discordant pairs in each direction. Written here: no library in our dependencies has
    it."""
    from scipy import stats as sps

    k = int(codes.max()) + 1
    d = np.bincount(codes, weights=(a > b).astype(float), minlength=k) - \
        np.bincount(codes, weights=(b > a).astype(float), minlength=k)
    den = float((d**2).sum())
    return 1.0 if den == 0 else float(sps.chi2.sf(d.sum() ** 2 / den, df=1))


def paired_compare(a: Mapping[str, float], b: Mapping[str, float], clusters: Mapping[str, str] | None = None,
                   *, binary: bool | None = None, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> Paired:
    """Compare two runs' per-sample values on the same ids: mean(b - a) with a clustered paired bootstrap
    interval; exact McNemar for 0/1 metrics on independent items, the clustered McNemar on clustered ones,
    a paired t-test on cluster totals of the differences otherwise. Refuses different id sets."""
    from scipy import stats as sps
    from statsmodels.stats.contingency_tables import mcnemar

    _check_level(level)
    ids, va, vb = _aligned(a, b, clusters)
    codes = cluster_codes([clusters[i] for i in ids] if clusters is not None else None, len(ids))
    k = int(codes.max()) + 1
    binary = is_binary(va) and is_binary(vb) if binary is None else binary
    if binary and not (is_binary(va) and is_binary(vb)):
        raise DataError("binary=True but the values are not all 0 or 1")
    d = vb - va
    low, high = _percentile(mean_replicates(d, codes, n_boot, seed), level)
    p: float | None
    if binary:
        n10, n01 = int(((va == 1) & (vb == 0)).sum()), int(((va == 0) & (vb == 1)).sum())
        effect = None if n10 + n01 == 0 else n01 / (n10 + n01) - 0.5  # Cohen's g, signed toward b
        if k == len(ids):
            table = [[int(((va == 1) & (vb == 1)).sum()), n10], [n01, int(((va == 0) & (vb == 0)).sum())]]
            p, test = float(mcnemar(table, exact=True).pvalue), "mcnemar-exact"
        else:
            p, test = clustered_mcnemar(va, vb, codes), "mcnemar-clustered"
    else:
        sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
        effect = float(d.mean() / sd) if sd > 0 else None  # Cohen's d_z
        totals = np.bincount(codes, weights=d, minlength=k)
        if k < 2 or np.ptp(totals) == 0:
            p = 1.0 if not totals.any() else None
        else:
            p = float(sps.ttest_1samp(totals, 0.0).pvalue)
        test = "paired-t" if k == len(ids) else "paired-t-clusters"
    return Paired(diff=float(d.mean()), low=low, high=high, p_value=p, test=test, effect_size=effect,
                  n=len(ids), n_clusters=k, mean_a=float(va.mean()), mean_b=float(vb.mean()), level=level)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels), in the input order."""
    from statsmodels.stats.multitest import multipletests

    if len(p_values) == 0:
        return []
    return [float(x) for x in multipletests(np.asarray(p_values, dtype=float), method="holm")[1]]


def seed_summary(values: Sequence[float], level: float = 0.95) -> tuple[float, float, Interval]:
    """Across seeds of one configuration: mean, standard deviation (ddof=1) and the t interval of the mean."""
    from scipy import stats as sps

    _check_level(level)
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return NAN, NAN, Interval(NAN, NAN, "t-seeds", 0, level)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, NAN, Interval(NAN, NAN, "t-seeds", 1, level)
    sd = float(arr.std(ddof=1))
    if sd == 0:
        return mean, 0.0, Interval(mean, mean, "t-seeds", int(arr.size), level)
    low, high = sps.t.interval(level, df=arr.size - 1, loc=mean, scale=sd / math.sqrt(arr.size))
    return mean, sd, Interval(float(low), float(high), "t-seeds", int(arr.size), level)
