"""Agreement statistics for judge panels: point estimates and the item bootstrap.

`ratings` is a DataFrame: index = item id, one float column per rater, NaN = no verdict. Categories
are the distinct non-NaN values, or `levels` when given (so that an unused category still counts);
a binary scale always has the categories 0 and 1. Degenerate data (one category, one rater, no items)
gives NaN, never an exception; a value outside `levels` is a DataError.

Who computes what:
    cohen_kappa          sklearn.metrics.cohen_kappa_score (quadratic weights for ordinal scales);
                         bootstrap replicates use statsmodels' cohens_kappa on the resampled 2-way
                         table (same statistic, 40x cheaper per call than sklearn's input checks)
    fleiss_kappa         statsmodels.stats.inter_rater.aggregate_raters + fleiss_kappa
    krippendorff_alpha   krippendorff.alpha (nominal, or ordinal for ordinal scales)
    gwet_ac1 / gwet_ac2  written here from Gwet's formula (no library in our dependencies has it)
    icc                  written here from Shrout & Fleiss (1979) (likewise)
    percent_agreement    written here: the mean share of agreeing rater pairs (a definition)
Not used: irrCAC (Gwet's own package) pins scipy==1.12 and pandas<3, which conflicts with ours;
pingouin (intraclass_corr) pulls matplotlib, seaborn and pandas_flavor into a headless harness.

Ordinal weights (weighted kappa, AC2) are on category positions, as sklearn does: pass `levels` with
the full, equally spaced scale (e.g. 1..10) so that positions are the scale's distances.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats import inter_rater

from medharness.core import stats
from medharness.core.errors import DataError

Scale = Literal["binary", "nominal", "ordinal"]
IccForm = Literal["1,1", "2,1", "3,1"]
NAN = math.nan


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap percentile interval; NaN where undefined."""

    value: float
    low: float = NAN
    high: float = NAN
    n: int = 0  # items used


# --- encoding: floats -> category codes (-1 = missing) and per-item category counts ---------------


def as_values(ratings: pd.DataFrame | pd.Series) -> np.ndarray:
    try:
        return pd.DataFrame(ratings).to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise DataError(f"ratings must be numbers (NaN for a missing verdict): {e}") from e


def category_levels(values: np.ndarray, scale: Scale, levels: Sequence[float] | None = None) -> np.ndarray:
    """The sorted categories: `levels`, else 0/1 for binary, else the distinct observed values."""
    observed = np.unique(values[~np.isnan(values)])
    if levels is not None:
        cats = np.unique(np.asarray(levels, dtype=float))
    else:
        cats = np.array([0.0, 1.0]) if scale == "binary" else observed
    if scale == "binary" and len(cats) != 2:
        raise DataError(f"a binary scale has two levels, not {cats.tolist()}")
    unknown = np.setdiff1d(observed, cats)
    if unknown.size:
        raise DataError(f"ratings {unknown.tolist()} are not among the levels {cats.tolist()}")
    return cats


def encode(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    missing = np.isnan(values)
    codes = np.searchsorted(levels, np.where(missing, 0.0, values))
    return np.where(missing, -1, codes)


def counts(codes: np.ndarray, q: int) -> np.ndarray:
    """items x categories: how many raters put the item in each category."""
    return (codes[:, :, None] == np.arange(q)).sum(axis=1)


def quadratic_weights(q: int) -> np.ndarray:
    """Agreement weights 1 - (k - l)^2 / (q - 1)^2 on category positions (identity for q = 2)."""
    pos = np.arange(q)
    return 1.0 - (pos[:, None] - pos) ** 2 / max(q - 1, 1) ** 2


# --- statistics on encoded data (shared by the public functions and the bootstrap) ----------------


def percent_from_counts(table: np.ndarray) -> float:
    r = table.sum(axis=1)
    multi = r >= 2
    if not multi.any():
        return NAN
    c, r = table[multi], r[multi]
    return float(np.mean((c * (c - 1)).sum(axis=1) / (r * (r - 1))))


def gwet_from_counts(table: np.ndarray, weights: np.ndarray) -> float:
    """Gwet's AC1 (identity weights) / AC2, with missing ratings: Gwet, Handbook of Inter-Rater
    Reliability (4th ed., 2014), ch. 2-3; AC1 first in Gwet (2008), Br J Math Stat Psychol 61:29-48.

    pa = mean over items with r_i >= 2 of sum_k r_ik (r*_ik - 1) / (r_i (r_i - 1)), r*_ik = sum_l w_kl r_il
    pi_k = mean over items with r_i >= 1 of r_ik / r_i
    pe = sum(w) / (q (q - 1)) * sum_k pi_k (1 - pi_k)            (= 2 pi (1 - pi) for AC1, q = 2)
    AC = (pa - pe) / (1 - pe)
    """
    q = table.shape[1]
    r = table.sum(axis=1)
    multi, rated = r >= 2, r >= 1
    if q < 2 or not multi.any():
        return NAN
    c, rm = table[multi], r[multi]
    pa = np.mean((c * (c @ weights.T - 1)).sum(axis=1) / (rm * (rm - 1)))
    pi = (table[rated] / r[rated, None]).mean(axis=0)
    pe = weights.sum() / (q * (q - 1)) * (pi * (1 - pi)).sum()
    return float((pa - pe) / (1 - pe)) if pe < 1 else NAN


def fleiss_from_table(table: np.ndarray) -> float:
    """statsmodels' Fleiss kappa on an aggregate_raters table (every item rated by all raters)."""
    if len(table) == 0 or table.sum(axis=1)[0] < 2 or (table.sum(axis=0) > 0).sum() < 2:
        return NAN
    return float(inter_rater.fleiss_kappa(table, method="fleiss"))


def alpha_from_counts(table: np.ndarray, level: Literal["nominal", "ordinal"]) -> float:
    """krippendorff.alpha from per-unit value counts (its `value_counts` input; columns in level order)."""
    pairable = table[table.sum(axis=1) >= 2]
    if len(pairable) == 0 or (pairable.sum(axis=0) > 0).sum() < 2:
        return NAN
    return float(krippendorff.alpha(value_counts=table, level_of_measurement=level))


def kappa_from_codes(pairs: np.ndarray, q: int, weighted: bool) -> float:
    """sklearn's Cohen kappa on (n, 2) category codes; NaN when a single category is used."""
    if len(pairs) == 0 or len(np.unique(pairs)) < 2:
        return NAN
    return float(cohen_kappa_score(pairs[:, 0], pairs[:, 1], labels=np.arange(q),
                                   weights="quadratic" if weighted else None))


def kappa_from_table(table: np.ndarray, weighted: bool) -> float:
    """statsmodels' Cohen kappa on a q x q table: the bootstrap's fast path, equal to sklearn's."""
    used = (table.sum(axis=0) + table.sum(axis=1)) > 0
    if table.sum() == 0 or used.sum() < 2:
        return NAN
    return float(inter_rater.cohens_kappa(table, wt="quadratic" if weighted else None, return_results=False))


def pair_table(pairs: np.ndarray, q: int) -> np.ndarray:
    return np.bincount(pairs[:, 0] * q + pairs[:, 1], minlength=q * q).reshape(q, q)


def icc_from_values(x: np.ndarray, form: IccForm = "2,1") -> float:
    """Shrout & Fleiss (1979), Psychol Bull 86:420-428, Table 1, from the two-way ANOVA mean squares.

    ICC(1,1) = (BMS - WMS) / (BMS + (k-1) WMS)                       one-way random
    ICC(2,1) = (BMS - EMS) / (BMS + (k-1) EMS + k (JMS - EMS) / n)   two-way random, absolute agreement
    ICC(3,1) = (BMS - EMS) / (BMS + (k-1) EMS)                       two-way mixed, consistency
    """
    n, k = x.shape
    if n < 2 or k < 2 or np.ptp(x) == 0:
        return NAN
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    bms, jms = ss_rows / (n - 1), ss_cols / (k - 1)
    ems, wms = ss_err / ((n - 1) * (k - 1)), (ss_cols + ss_err) / (n * (k - 1))
    num, den = {
        "1,1": (bms - wms, bms + (k - 1) * wms),
        "2,1": (bms - ems, bms + (k - 1) * ems + k * (jms - ems) / n),
        "3,1": (bms - ems, bms + (k - 1) * ems),
    }[form]
    return float(num / den) if den > 0 else NAN


# --- public point statistics on frames ------------------------------------------------------------


def _encoded(ratings: pd.DataFrame, scale: Scale, levels: Sequence[float] | None) -> tuple[np.ndarray, int]:
    values = as_values(ratings)
    cats = category_levels(values, scale, levels)
    return encode(values, cats), len(cats)


def percent_agreement(ratings: pd.DataFrame) -> float:
    """Mean, over items with >= 2 ratings, of the share of rater pairs that give the same value."""
    codes, q = _encoded(ratings, "nominal", None)
    return percent_from_counts(counts(codes, q))


def cohen_kappa(a: pd.Series, b: pd.Series, scale: Scale, levels: Sequence[float] | None = None) -> float:
    """Cohen's kappa on the items both rated (Series align on their index); quadratic-weighted if ordinal."""
    codes, q = _encoded(pd.concat([pd.Series(a), pd.Series(b)], axis=1, keys=["a", "b"]), scale, levels)
    return kappa_from_codes(codes[(codes >= 0).all(axis=1)], q, scale == "ordinal")


def fleiss_kappa(ratings: pd.DataFrame, levels: Sequence[float] | None = None) -> float:
    """Fleiss' kappa (nominal) on the items rated by all raters."""
    codes, q = _encoded(ratings, "nominal", levels)
    complete = codes[(codes >= 0).all(axis=1)]
    return fleiss_from_table(inter_rater.aggregate_raters(complete, n_cat=q)[0])


def krippendorff_alpha(ratings: pd.DataFrame, scale: Scale, levels: Sequence[float] | None = None) -> float:
    """Krippendorff's alpha (nominal, or ordinal for ordinal scales) on all pairable values."""
    codes, q = _encoded(ratings, scale, levels)
    return alpha_from_counts(counts(codes, q), "ordinal" if scale == "ordinal" else "nominal")


def gwet_ac1(ratings: pd.DataFrame, levels: Sequence[float] | None = None) -> float:
    """Gwet's AC1, any number of raters, missing ratings allowed; NaN with one category (pass `levels`)."""
    codes, q = _encoded(ratings, "nominal", levels)
    return gwet_from_counts(counts(codes, q), np.eye(q))


def gwet_ac2(ratings: pd.DataFrame, levels: Sequence[float] | None = None) -> float:
    """Gwet's AC2 with quadratic weights on category positions: the ordinal companion of AC1."""
    codes, q = _encoded(ratings, "ordinal", levels)
    return gwet_from_counts(counts(codes, q), quadratic_weights(q))


def icc(ratings: pd.DataFrame, form: IccForm = "2,1") -> float:
    """ICC on items all raters scored. Default ICC(2,1), two-way random, absolute agreement, single rater.

    ICC(2,1) because judges and human raters stand for a larger population of possible raters (other
    models, other radiologists), and a judge that scores every item 2 points higher than the humans does
    not agree with them: ICC(3,1) (consistency) would hide that offset. Single rater: the harness uses
    one judge's score at a time."""
    x = as_values(ratings)
    return icc_from_values(x[~np.isnan(x).any(axis=1)], form)


# --- bootstrap over items -------------------------------------------------------------------------


def resampled(point: float, replicate: Callable[[np.ndarray], float], n: int, n_boot: int = 1000,
              seed: int = 0, confidence: float = 0.95) -> Estimate:
    """Percentile interval of `replicate(item indices)` over `n_boot` resamples of the n items
    (medharness.core.stats.bootstrap_interval; undefined replicates, e.g. one category drawn, are dropped)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    if n == 0 or n_boot <= 0 or math.isnan(point):
        return Estimate(point, NAN, NAN, n)
    ci = stats.bootstrap_interval(np.arange(n), None, replicate, n_boot=n_boot, seed=seed, level=confidence)
    return Estimate(point, ci.low, ci.high, n)


def on_rows(fn: Callable[[np.ndarray], float], data: np.ndarray, n_boot: int = 1000, seed: int = 0,
            confidence: float = 0.95) -> Estimate:
    """Bootstrap `fn` over the rows (items) of an array."""
    return resampled(fn(data), lambda idx: fn(data[idx]), len(data), n_boot, seed, confidence)


def bootstrap(stat: Callable[[pd.DataFrame], float], ratings: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> Estimate:
    """`stat` with a percentile interval from resampling items (rows) with replacement.

    Items with no rating at all are dropped first; n counts the rest. Seeded: same seed, same interval."""
    frame = ratings[ratings.notna().any(axis=1)]
    return resampled(stat(frame), lambda idx: stat(frame.iloc[idx]), len(frame), n_boot, seed, confidence)
