"""How far to trust a judge panel: agreement among judges, and with a rule-based metric or human labels.

Input: `ratings`, a DataFrame (index = item id, one float column per rater, NaN = no verdict) and a
scale (binary | nominal | ordinal). Every statistic comes as an `Estimate` (value, 95% bootstrap
percentile interval over items, n items used); NaN where undefined. See `agreement_stats` for which
library computes what and the formulas.

    panel_agreement   all raters together: percent agreement and Krippendorff's alpha on items with
                      >= 2 ratings, Fleiss' kappa on items rated by everyone, Gwet's AC1 (and AC2 for
                      ordinal scales) with missing ratings
    pairwise_agreement   each pair of raters on the items both rated: percent, Cohen's kappa
                      (quadratic-weighted for ordinal), AC1 (and AC2)
    agreement_with    each rater against a reference Series (rule-based metric, human labels), same
                      columns, plus ICC(2,1) when `with_icc` (NaN for nominal scales)

Why several: kappa (Cohen, Fleiss) and alpha drop sharply when one verdict dominates, even if raters agree
95% of the time (the "kappa paradox"); Gwet's AC1 does not. Read them together.

A report, as the CLI builds it (any section may be missing or None and is then left out):

    {"task": str, "field": str, "scale": str,
     "panel": panel_agreement(...),            # {"n_items", "n_raters", "<statistic>": Estimate, ...}
     "pairwise": pairwise_agreement(...),      # [{"a", "b", "n", "<statistic>": Estimate, ...}]
     "vs_rule": agreement_with(...),           # [{"rater", "reference", "n", "<statistic>": Estimate, ...}]
     "vs_human": agreement_with(..., with_icc=True)}

`to_markdown` renders it as GitHub tables, `to_json` as a plain dict (NaN -> None).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
import pandas as pd
from statsmodels.stats import inter_rater
from tabulate import tabulate

from medharness.judges.agreement_stats import (
    Estimate,
    Scale,
    alpha_from_counts,
    as_values,
    bootstrap,
    category_levels,
    cohen_kappa,
    counts,
    encode,
    fleiss_from_table,
    fleiss_kappa,
    gwet_ac1,
    gwet_ac2,
    gwet_from_counts,
    icc,
    icc_from_values,
    kappa_from_codes,
    kappa_from_table,
    krippendorff_alpha,
    on_rows,
    pair_table,
    percent_agreement,
    percent_from_counts,
    quadratic_weights,
    resampled,
)

__all__ = [
    "Estimate", "Scale", "agreement_with", "bootstrap", "cohen_kappa", "fleiss_kappa", "gwet_ac1", "gwet_ac2",
    "icc", "krippendorff_alpha", "pairwise_agreement", "panel_agreement", "percent_agreement", "to_json",
    "to_markdown",
]


def panel_agreement(ratings: pd.DataFrame, scale: Scale, levels: Sequence[float] | None = None,
                    n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """All raters together: {"n_items", "n_raters", "percent_agreement", "fleiss_kappa",
    "krippendorff_alpha", "gwet_ac1"} (+ "gwet_ac2" for ordinal scales)."""
    values = as_values(ratings)
    cats = category_levels(values, scale, levels)
    q = len(cats)
    codes = encode(values, cats)
    table = counts(codes, q)
    rated = table.sum(axis=1)
    multi, any_rated = table[rated >= 2], table[rated >= 1]
    full = inter_rater.aggregate_raters(codes[(codes >= 0).all(axis=1)], n_cat=q)[0]
    level: Literal["nominal", "ordinal"] = "ordinal" if scale == "ordinal" else "nominal"
    report: dict[str, Any] = {
        "n_items": int((rated >= 1).sum()),
        "n_raters": int(codes.shape[1]),
        "percent_agreement": on_rows(percent_from_counts, multi, n_boot, seed),
        "fleiss_kappa": on_rows(fleiss_from_table, full, n_boot, seed),
        "krippendorff_alpha": on_rows(lambda t: alpha_from_counts(t, level), multi, n_boot, seed),
        "gwet_ac1": on_rows(lambda t: gwet_from_counts(t, np.eye(q)), any_rated, n_boot, seed),
    }
    if scale == "ordinal":
        w = quadratic_weights(q)
        report["gwet_ac2"] = on_rows(lambda t: gwet_from_counts(t, w), any_rated, n_boot, seed)
    return report


def _pair(codes: np.ndarray, values: np.ndarray, q: int, scale: Scale, n_boot: int, seed: int,
          with_icc: bool) -> dict[str, Any]:
    """Two raters on the items both rated."""
    both = (codes >= 0).all(axis=1)
    pairs, x = codes[both], values[both]
    table = counts(pairs, q)
    ordinal = scale == "ordinal"
    row: dict[str, Any] = {
        "n": len(pairs),
        "percent_agreement": on_rows(percent_from_counts, table, n_boot, seed),
        # point: sklearn; replicates: statsmodels on the resampled table (same value, much cheaper)
        "cohen_kappa": resampled(kappa_from_codes(pairs, q, ordinal),
                                 lambda idx: kappa_from_table(pair_table(pairs[idx], q), ordinal),
                                 len(pairs), n_boot, seed),
        "gwet_ac1": on_rows(lambda t: gwet_from_counts(t, np.eye(q)), table, n_boot, seed),
    }
    if ordinal:
        w = quadratic_weights(q)
        row["gwet_ac2"] = on_rows(lambda t: gwet_from_counts(t, w), table, n_boot, seed)
    if with_icc:  # ICC needs numbers on a scale: undefined for nominal categories
        row["icc"] = (Estimate(math.nan, n=len(x)) if scale == "nominal"
                      else on_rows(icc_from_values, x, n_boot, seed))
    return row


def pairwise_agreement(ratings: pd.DataFrame, scale: Scale, levels: Sequence[float] | None = None,
                       n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per rater pair, on the items both scored:
    {"a", "b", "n", "percent_agreement", "cohen_kappa", "gwet_ac1"} (+ "gwet_ac2")."""
    values = as_values(ratings)
    cats = category_levels(values, scale, levels)
    codes = encode(values, cats)
    return [{"a": str(ratings.columns[i]), "b": str(ratings.columns[j]),
             **_pair(codes[:, [i, j]], values[:, [i, j]], len(cats), scale, n_boot, seed, False)}
            for i, j in itertools.combinations(range(ratings.shape[1]), 2)]


def agreement_with(ratings: pd.DataFrame, reference: pd.Series, scale: Scale,
                   levels: Sequence[float] | None = None, n_boot: int = 1000, seed: int = 0,
                   with_icc: bool = False) -> list[dict[str, Any]]:
    """Each rater against `reference` (aligned on item id; a column of the same name is skipped):
    {"rater", "reference", "n", "percent_agreement", "cohen_kappa", "gwet_ac1"} (+ "gwet_ac2", "icc")."""
    name = "reference" if reference.name is None else str(reference.name)
    raters = [c for c in ratings.columns if c != reference.name]
    ref = as_values(reference.reindex(ratings.index))[:, 0]
    values = as_values(ratings[raters])
    cats = category_levels(np.concatenate([values.ravel(), ref]), scale, levels)
    codes, ref_codes = encode(values, cats), encode(ref, cats)
    return [{"rater": str(rater), "reference": name,
             **_pair(np.column_stack([codes[:, i], ref_codes]), np.column_stack([values[:, i], ref]),
                     len(cats), scale, n_boot, seed, with_icc)}
            for i, rater in enumerate(raters)]


# --- rendering --------------------------------------------------------------------------------------

LABELS = {
    "percent_agreement": "percent agreement", "cohen_kappa": "Cohen κ", "fleiss_kappa": "Fleiss κ",
    "krippendorff_alpha": "Krippendorff α", "gwet_ac1": "Gwet AC1", "gwet_ac2": "Gwet AC2 (quadratic)",
    "icc": "ICC(2,1)", "a": "rater a", "b": "rater b",
}
SECTIONS = {"pairwise": "Pairwise, on the items both raters scored:",
            "vs_rule": "Each judge against the rule-based metric:",
            "vs_human": "Each judge against human labels:"}


def _cell(value: Any) -> str:
    if not isinstance(value, Estimate):
        return str(value)
    if math.isnan(value.value):
        return "n/a"
    if math.isnan(value.low) or math.isnan(value.high):
        return f"{value.value:.3f}"
    return f"{value.value:.3f} [{value.low:.3f}, {value.high:.3f}]"


def _label(key: str, ordinal: bool) -> str:
    return "Cohen κ (quadratic)" if key == "cohen_kappa" and ordinal else LABELS.get(key, key)


def to_markdown(report: dict[str, Any]) -> str:
    """The report as GitHub tables: "value [low, high]" cells, n items, then the legend."""
    ordinal = report.get("scale") == "ordinal"
    head = [f"{k}: {report[k]}" for k in ("task", "field", "scale") if report.get(k) is not None]
    parts = [" · ".join(head)] if head else []
    panel = report.get("panel")
    if panel:
        parts.append(f"Panel: {panel.get('n_items', '?')} items, {panel.get('n_raters', '?')} raters.")
        stats = [[_label(k, ordinal), _cell(v), v.n] for k, v in panel.items() if isinstance(v, Estimate)]
        parts.append(tabulate(stats, headers=["statistic", "estimate [95% CI]", "n"], tablefmt="github"))
    for section, title in SECTIONS.items():
        rows: list[dict[str, Any]] = report.get(section) or []
        if not rows:
            continue
        keys = list(dict.fromkeys(k for row in rows for k in row))
        parts.append(title)
        parts.append(tabulate([[_cell(row.get(k, "")) for k in keys] for row in rows],
                              headers=[_label(k, ordinal) for k in keys], tablefmt="github"))
    legend = ("Cells: estimate [95% bootstrap percentile interval, items resampled]; n/a = undefined "
              "(e.g. a single category). Kappa and alpha drop when one verdict dominates; AC1 does not.")
    if ordinal:
        legend += (" Percent agreement, Fleiss κ and AC1 count exact matches only; weighted κ, ordinal α, "
                   "AC2 and ICC credit near misses.")
    parts.append(legend)
    return "\n\n".join(parts) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, Estimate):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value if value is None or isinstance(value, str) else str(value)


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report as plain JSON types: Estimates become {"value", "low", "high", "n"}; NaN becomes None."""
    return _plain(report)
