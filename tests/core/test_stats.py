"""medharness.core.stats against hand-computed and published examples, and against the libraries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

from medharness.core import stats
from medharness.core.errors import DataError


def wilson_by_formula(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_matches_its_formula_and_a_published_example() -> None:
    # Newcombe (1998), Stat Med 17:857, Table I example: 81/263 -> Wilson 0.2553 to 0.3662
    w = stats.wilson_interval(81, 263)
    assert (round(w.low, 4), round(w.high, 4)) == (0.2553, 0.3662)
    for k, n in [(0, 20), (20, 20), (7, 31), (1, 2)]:
        w = stats.wilson_interval(k, n)
        low, high = wilson_by_formula(k, n, sps.norm.ppf(0.975))
        assert (w.low == pytest.approx(max(low, 0.0), abs=1e-12)
                and w.high == pytest.approx(min(high, 1.0), abs=1e-12))
        assert (w.method, w.n_clusters) == ("wilson", n)
    assert stats.wilson_interval(0, 20).high > 0.1  # never 0 +- 0 at 0%
    with pytest.raises(DataError):
        stats.wilson_interval(5, 3)


def test_wilson_is_statsmodels_proportion_confint_bit_for_bit() -> None:
    """Written here to spare `run` the statsmodels import; run.json's numbers stay exactly statsmodels'."""
    from statsmodels.stats.proportion import proportion_confint

    for n in [*range(1, 120), 451, 1000, 6719, 100003]:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for level in (0.95, 0.9, 0.99):
                low, high = proportion_confint(k, n, alpha=1 - level, method="wilson")
                expected = (0.0 if k == 0 else float(low), 1.0 if k == n else float(high))
                w = stats.wilson_interval(k, n, level)
                assert (w.low, w.high) == expected, (k, n, level)


def binary_runs(table: list[list[int]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per-item 0/1 values of runs a and b realising a 2x2 table [[a1b1, a1b0], [a0b1, a0b0]]."""
    cells = [(1, 1)] * table[0][0] + [(1, 0)] * table[0][1] + [(0, 1)] * table[1][0] + [(0, 0)] * table[1][1]
    return ({str(i): float(x) for i, (x, _) in enumerate(cells)},
            {str(i): float(y) for i, (_, y) in enumerate(cells)})


def test_exact_mcnemar_on_a_hand_computed_table() -> None:
    # 1 item only run a got right, 7 only run b: exact two-sided p = 2 * P(X <= 1 | Bin(8, 1/2)) = 2 * 9 / 256
    a, b = binary_runs([[30, 1], [7, 12]])
    r = stats.paired_compare(a, b)
    assert r.test == "mcnemar-exact"
    assert r.p_value == pytest.approx(18 / 256, abs=1e-12)
    assert (r.diff == pytest.approx(6 / 50)
            and (r.mean_a, r.mean_b) == (pytest.approx(31 / 50), pytest.approx(37 / 50)))
    assert r.effect_size == pytest.approx(7 / 8 - 0.5)  # Cohen's g toward b
    assert r.low < r.diff < r.high and (r.n, r.n_clusters) == (50, 50)


def test_mcnemar_on_agrestis_table_agrees_with_the_library() -> None:
    # Agresti, Categorical Data Analysis (2002), Table 10.1: presidential approval, 794 / 150 / 86 / 570
    table = [[794, 150], [86, 570]]
    a, b = binary_runs(table)
    r = stats.paired_compare(a, b, n_boot=200)
    assert r.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert r.p_value < 1e-4  # Agresti: z^2 = 17.36
    assert r.diff == pytest.approx((86 - 150) / 1600)


def test_clustered_mcnemar_reduces_to_mcnemar_for_singleton_clusters() -> None:
    a, b = binary_runs([[40, 9], [21, 30]])
    va, vb = np.array(list(a.values())), np.array(list(b.values()))
    p = stats.clustered_mcnemar(va, vb, np.arange(len(va)))
    assert p == pytest.approx(mcnemar([[40, 9], [21, 30]], exact=False, correction=False).pvalue, rel=1e-9)
    # two items per cluster discordant the same way: the evidence is half as strong as it looks
    clusters = {k: str(int(k) // 2) for k in a}
    r = stats.paired_compare(a, b, clusters)
    assert r.test == "mcnemar-clustered" and r.n_clusters == 50
    d = vb - va
    totals = d.reshape(-1, 2).sum(axis=1)
    assert r.p_value == pytest.approx(sps.chi2.sf(totals.sum() ** 2 / (totals**2).sum(), 1), rel=1e-9)


def test_continuous_paired_test_is_scipys_paired_t() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(80)
    y = x + rng.normal(0.05, 0.1, 80)
    a, b = {str(i): v for i, v in enumerate(x)}, {str(i): v for i, v in enumerate(y)}
    r = stats.paired_compare(a, b)
    assert r.test == "paired-t"
    assert r.p_value == pytest.approx(sps.ttest_rel(y, x).pvalue, rel=1e-9)
    assert r.effect_size == pytest.approx(np.mean(y - x) / np.std(y - x, ddof=1))


def test_paired_compare_refuses_different_items() -> None:
    with pytest.raises(DataError, match="not scored on the same items.*1 id.*'c'"):
        stats.paired_compare({"a": 1.0, "b": 0.0, "c": 1.0}, {"a": 1.0, "b": 0.0})
    with pytest.raises(DataError, match="no items"):
        stats.paired_compare({}, {})


def test_clustered_bootstrap_widens_by_the_known_design_effect() -> None:
    # 300 images x 4 questions with the same answer on one image: ICC = 1, design effect = 4, so the
    # clustered interval is sqrt(4) = 2 times as wide as the naive item bootstrap
    rng = np.random.default_rng(7)
    per_image = (rng.random(300) < 0.5).astype(float)
    values = np.repeat(per_image, 4)
    clusters = [str(i // 4) for i in range(len(values))]
    naive = stats.bootstrap_interval(values)
    clustered = stats.bootstrap_interval(values, clusters)
    ratio = (clustered.high - clustered.low) / (naive.high - naive.low)
    assert 1.8 < ratio < 2.2
    assert (naive.n_clusters, clustered.n_clusters) == (1200, 300)
    # and both match the normal-theory width of their own effective sample size
    p = values.mean()
    for interval, n_eff in [(naive, 1200), (clustered, 300)]:
        expected = 2 * 1.96 * math.sqrt(p * (1 - p) / n_eff)
        assert interval.high - interval.low == pytest.approx(expected, rel=0.1)


def test_independent_clusters_change_nothing_and_the_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(2)
    values = rng.random(400)
    one_each = stats.bootstrap_interval(values, [f"img{i}" for i in range(400)], seed=3)
    assert one_each == stats.bootstrap_interval(values, None, seed=3)
    assert stats.bootstrap_interval(values, seed=3) == stats.bootstrap_interval(values, seed=3)
    other = stats.bootstrap_interval(values, seed=4)
    assert other != one_each and abs(other.low - one_each.low) < 0.01
    ref = sps.bootstrap((values,), np.mean, method="percentile", n_resamples=4000, random_state=0)
    assert one_each.low == pytest.approx(ref.confidence_interval.low, abs=0.006)
    assert one_each.high == pytest.approx(ref.confidence_interval.high, abs=0.006)


def test_a_corpus_statistic_gets_the_same_resamples_as_the_mean() -> None:
    rng = np.random.default_rng(3)
    values = rng.random(90)
    clusters = [i // 3 for i in range(90)]
    fast = stats.bootstrap_interval(values, clusters, n_boot=300, seed=5)
    rows = stats.bootstrap_interval(list(values), clusters, lambda r: float(np.mean(r)), n_boot=300, seed=5)
    assert (rows.low, rows.high) == (pytest.approx(fast.low, abs=1e-6), pytest.approx(fast.high, abs=1e-6))
    # a statistic of rows that is not a mean: the median of (answer, gold) agreement, NaN replicates dropped
    pairs = [("yes", "yes"), ("no", "yes"), ("no", "no")] * 20
    acc = stats.bootstrap_interval(pairs, None, lambda r: float(np.mean([p == g for p, g in r])), n_boot=300)
    assert acc.low < 2 / 3 < acc.high


def test_metric_interval_picks_wilson_for_independent_proportions() -> None:
    values = [1.0] * 30 + [0.0] * 10
    w = stats.metric_interval(values)
    assert w == stats.wilson_interval(30, 40)
    clustered = stats.metric_interval(values, [str(i // 2) for i in range(40)])
    assert clustered.method == "bootstrap-percentile" and clustered.n_clusters == 20
    perfect = stats.metric_interval([1.0] * 40, [str(i // 4) for i in range(40)])
    assert perfect.method == "wilson-clusters" and perfect.high == pytest.approx(1.0) and perfect.low < 0.8
    assert perfect.low == pytest.approx(stats.wilson_interval(10, 10).low)


def test_holm_by_hand_and_by_the_library() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([]) == []


def test_seed_summary_is_the_t_interval_of_the_mean() -> None:
    mean, sd, interval = stats.seed_summary([0.50, 0.55, 0.60])
    assert (mean, sd) == (pytest.approx(0.55), pytest.approx(0.05))
    half = 4.303 * 0.05 / math.sqrt(3)  # t(0.975, 2 df) = 4.303 from the table
    assert (interval.low == pytest.approx(0.55 - half, abs=1e-4)
            and interval.high == pytest.approx(0.55 + half, abs=1e-4))
    assert interval.n_clusters == 3 and interval.method == "t-seeds"
    one = stats.seed_summary([0.7])
    assert one[0] == 0.7 and math.isnan(one[1]) and not one[2].defined


def test_the_wilson_intervals_normal_quantile_is_scipys_bit_for_bit() -> None:
    # level 0.95 uses the constant (no scipy import); any other level asks scipy.special.ndtri
    from scipy.special import ndtri

    assert stats.Z_95 == float(-ndtri((1 - 0.95) / 2.0))
    for k, n in [(0, 20), (7, 31), (81, 263), (999, 1000)]:
        z = stats.wilson_interval(k, n, 0.95)
        assert (z.low, z.high) == wilson_exact(k, n, float(-ndtri((1 - 0.95) / 2.0)))
        z90 = stats.wilson_interval(k, n, 0.9)
        assert (z90.low, z90.high) == wilson_exact(k, n, float(-ndtri((1 - 0.9) / 2.0)))


def wilson_exact(k: int, n: int, crit: float) -> tuple[float, float]:
    """The Wilson bounds computed as stats.wilson_interval computes them."""
    crit2, share = crit**2, k / n
    denom = 1 + crit2 / n
    centre = (share + crit2 / (2 * n)) / denom
    half = crit * math.sqrt(share * (1.0 - share) / n + crit2 / (4.0 * n**2)) / denom
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def test_the_cluster_robust_interval_uses_scipy_stats_t_quantile_bit_for_bit() -> None:
    # computed with scipy.special.stdtrit (scipy.stats costs ~0.5 s to import): the same floats as t.ppf
    rng = np.random.default_rng(3)
    for k, level in [(2, 0.95), (6001, 0.95), (50_000, 0.9), (123_457, 0.99)]:
        codes = np.repeat(np.arange(k), 2)
        values = rng.random(2 * k)
        got = stats.cluster_robust_interval(values, codes, level)
        resid = np.bincount(codes, weights=values - values.mean(), minlength=k)
        se = math.sqrt(k / (k - 1) * float((resid**2).sum())) / len(values)
        half = float(sps.t.ppf((1 + level) / 2, k - 1)) * se
        assert (got.low, got.high) == (float(values.mean()) - half, float(values.mean()) + half)


def test_many_clusters_use_the_cluster_robust_interval_which_agrees_with_the_bootstrap() -> None:
    rng = np.random.default_rng(11)
    k = stats.BOOTSTRAP_MAX_CLUSTERS + 1000
    per_cluster = rng.random(k)
    values = np.repeat(per_cluster, 2) + rng.normal(0, 0.1, 2 * k)  # two correlated items per cluster
    clusters = np.repeat(np.arange(k), 2)
    robust = stats.metric_interval(values, clusters)
    boot = stats.bootstrap_interval(values, clusters, n_boot=1000)
    assert (robust.method, robust.n_clusters) == ("cluster-robust-t", k)
    assert (robust.low == pytest.approx(boot.low, abs=0.002)
            and robust.high == pytest.approx(boot.high, abs=0.002))
    # the sandwich formula by hand: squared cluster residual totals over n^2, times G/(G-1) (one regressor)
    mean = values.mean()
    resid = np.bincount(clusters, weights=values - mean)
    n = len(values)
    se = math.sqrt(k / (k - 1) * (resid**2).sum()) / n
    assert robust.high - robust.low == pytest.approx(2 * sps.t.ppf(0.975, k - 1) * se, rel=1e-9)
    # and the library: statsmodels OLS on a constant with cluster-robust covariance
    from statsmodels.regression.linear_model import OLS

    fit = OLS(values, np.ones(len(values))).fit(cov_type="cluster", cov_kwds={"groups": clusters}, use_t=True)
    assert (robust.low, robust.high) == tuple(pytest.approx(x, rel=1e-9) for x in fit.conf_int(0.05)[0])
