"""Judge-panel agreement: hand-computed and published values, degenerate data, bootstrap, reports."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("statsmodels", reason="agreement statistics need the `judges` extra")
pytest.importorskip("krippendorff", reason="agreement statistics need the `judges` extra")

from medharness.core.errors import DataError
from medharness.judges.agreement import (
    Estimate,
    agreement_with,
    bootstrap,
    cohen_kappa,
    fleiss_kappa,
    gwet_ac1,
    gwet_ac2,
    icc,
    krippendorff_alpha,
    pairwise_agreement,
    panel_agreement,
    percent_agreement,
    to_json,
    to_markdown,
)
from medharness.judges.agreement_stats import kappa_from_codes, kappa_from_table, pair_table

NAN = np.nan


@pytest.fixture(autouse=True)
def no_warnings() -> Iterator[None]:
    """Degenerate data must give NaN quietly: no RuntimeWarning (0/0) or library warning either."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def frame(**columns: list[float]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=[f"t/{i}" for i in range(n)], dtype=float)


def pairs_from_table(cells: dict[tuple[int, int], int]) -> pd.DataFrame:
    """Two raters' verdicts from a contingency table {(a, b): count}."""
    a = [k[0] for k, c in cells.items() for _ in range(c)]
    b = [k[1] for k, c in cells.items() for _ in range(c)]
    return frame(a=a, b=b)


def noisy_panel(n: int, raters: int = 3, flip: float = 0.15, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.6).astype(float)
    cols = {f"j{i}": np.where(rng.random(n) < flip, 1 - truth, truth) for i in range(raters)}
    return pd.DataFrame(cols, index=[f"t/{i}" for i in range(n)])


# --- hand-computed values ----------------------------------------------------------------------------


def test_percent_agreement_by_hand() -> None:
    # items: [1,1,1] -> 3/3 pairs agree; [1,1,0] -> 1/3; [1,-,0] -> 0/1; [2,-,-] -> one rating, skipped
    # mean = (1 + 1/3 + 0) / 3 = 4/9
    r = frame(x=[1, 1, 1, 2], y=[1, 1, NAN, NAN], z=[1, 0, 0, NAN])
    assert percent_agreement(r) == pytest.approx(4 / 9)


# 10 items, 2 raters: (1,1) 5, (1,0) 2, (0,1) 1, (0,0) 2
TEN = pairs_from_table({(1, 1): 5, (1, 0): 2, (0, 1): 1, (0, 0): 2})


def test_cohen_kappa_2x2_by_hand() -> None:
    # po = (5 + 2) / 10 = 0.7; a says 1 on 7/10, b on 6/10
    # pe = 0.7 * 0.6 + 0.3 * 0.4 = 0.54; kappa = (0.7 - 0.54) / (1 - 0.54) = 0.16 / 0.46 = 0.347826
    assert cohen_kappa(TEN["a"], TEN["b"], "binary") == pytest.approx(0.16 / 0.46)
    assert percent_agreement(TEN) == pytest.approx(0.7)


def test_cohen_kappa_quadratic_by_hand() -> None:
    # a = 1 2 3 1 2, b = 1 3 3 2 2
    # disagreement weights (i - j)^2 / (q - 1)^2 = [[0, .25, 1], [.25, 0, .25], [1, .25, 0]]
    # observed: cells (2,3) and (1,2), each .25, / 5 items -> 0.1
    # expected: marginals a = (.4, .4, .2), b = (.2, .4, .4); sum w_ij a_i b_j
    #   = .4*.4*.25 + .4*.4*1 + .4*.2*.25 + .4*.4*.25 + .2*.2*1 + .2*.4*.25 = .32
    # kappa_w = 1 - 0.1 / 0.32 = 0.6875 (unweighted: po = .6, pe = .08 + .16 + .08 = .32, kappa = .28 / .68)
    r = frame(a=[1, 2, 3, 1, 2], b=[1, 3, 3, 2, 2])
    assert cohen_kappa(r["a"], r["b"], "ordinal") == pytest.approx(0.6875)
    assert cohen_kappa(r["a"], r["b"], "nominal") == pytest.approx(0.28 / 0.68)


def test_cohen_kappa_aligns_on_items_and_skips_missing() -> None:
    a = TEN["a"].copy()
    a["t/extra"] = 1.0  # b never scored it
    b = TEN["b"].iloc[::-1].copy()  # order does not matter: the index does
    b["t/0"] = NAN
    a_kept = TEN["a"].drop("t/0")
    assert cohen_kappa(a, b, "binary") == pytest.approx(cohen_kappa(a_kept, TEN["b"].drop("t/0"), "binary"))


def test_fleiss_kappa_by_hand() -> None:
    # 3 raters, 4 items: [1,1,1] [1,1,0] [0,0,1] [0,0,0]
    # P_i = (sum_j n_ij^2 - 3) / (3 * 2): 1, (4+1-3)/6 = 1/3, 1/3, 1 -> P_bar = 2/3
    # p_1 = 6/12 = .5, p_0 = .5 -> P_e = .5; kappa = (2/3 - 1/2) / (1/2) = 1/3
    r = frame(x=[1, 1, 0, 0], y=[1, 1, 0, 0], z=[1, 0, 1, 0])
    assert fleiss_kappa(r) == pytest.approx(1 / 3)
    # items not rated by everyone are left out
    more = pd.concat([r, frame(x=[1], y=[0], z=[NAN]).set_axis(["t/extra"])])
    assert fleiss_kappa(more) == pytest.approx(1 / 3)


def test_fleiss_kappa_classic_example() -> None:
    # The worked example of Fleiss' kappa (Wikipedia, after Fleiss 1971): 10 subjects, 14 raters,
    # 5 categories; P_bar = 0.378, P_e = 0.213, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    r = pd.DataFrame([np.repeat(np.arange(1, 6), row) for row in table], dtype=float)
    assert fleiss_kappa(r) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_canonical_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units,
    # nominal, with missing values: alpha = 0.743 (the same data give ordinal 0.815)
    r = pd.DataFrame({
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        "C": [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    })
    assert krippendorff_alpha(r, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(r, "ordinal") == pytest.approx(0.815, abs=5e-4)


def test_gwet_ac1_two_raters_by_hand() -> None:
    # TEN: pa = 0.7; pi = mean marginal share of 1 = (0.7 + 0.6) / 2 = 0.65
    # pe = 2 pi (1 - pi) = 2 * .65 * .35 = 0.455; AC1 = (0.7 - 0.455) / (1 - 0.455) = 0.245 / 0.545
    assert gwet_ac1(TEN) == pytest.approx(0.245 / 0.545)


def test_gwet_ac1_multi_rater_with_missing_by_hand() -> None:
    # items: [1,1,-] [1,0,1] [-,-,0] [0,0,0]
    # pa over items with >= 2 ratings: (1 + (2*1 + 1*0) / (3*2) + 1) / 3 = 7/9
    # pi_1 over items with >= 1 rating: (2/2 + 2/3 + 0/1 + 0/3) / 4 = 5/12; pi_0 = 7/12
    # pe = 1/(q-1) * sum pi_k (1 - pi_k) = 2 * 5/12 * 7/12 = 35/72
    # AC1 = (7/9 - 35/72) / (1 - 35/72) = (21/72) / (37/72) = 21/37   (irrCAC gives 0.56757 too)
    r = frame(r1=[1, 1, NAN, 0], r2=[1, 0, NAN, 0], r3=[NAN, 1, 0, 0])
    assert gwet_ac1(r) == pytest.approx(21 / 37)


def test_gwet_ac2_quadratic_by_hand() -> None:
    # a = 1 2 3 1 2, b = 1 3 3 2 2; weights w = 1 - (k - l)^2 / 4 = [[1, .75, 0], [.75, 1, .75], [0, .75, 1]]
    # per item sum_k r_k (r*_k - 1) / 2 with r* = w r: (1,1) 1; (2,3) (.75 + .75)/2 = .75; (3,3) 1; (1,2) .75;
    # (2,2) 1 -> pa = 4.5 / 5 = 0.9
    # pi = mean item shares = (1.5, 2, 1.5) / 5 = (.3, .4, .3); sum pi (1 - pi) = .66
    # pe = sum(w) / (q (q - 1)) * .66 = 6 / 6 * .66 = .66; AC2 = (.9 - .66) / (1 - .66) = 12/17
    r = frame(a=[1, 2, 3, 1, 2], b=[1, 3, 3, 2, 2])
    assert gwet_ac2(r) == pytest.approx(12 / 17)
    # AC2 of binary data is AC1 (quadratic weights on two categories are the identity)
    assert gwet_ac2(TEN) == pytest.approx(gwet_ac1(TEN))


def test_icc_shrout_fleiss_table_2() -> None:
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; Table 4: ICC(1,1) .17, ICC(2,1) .29, ICC(3,1) .71
    r = pd.DataFrame([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
                     columns=["j1", "j2", "j3", "j4"], dtype=float)
    assert icc(r) == pytest.approx(0.29, abs=5e-3)
    assert icc(r, "2,1") == icc(r)
    assert icc(r, "3,1") == pytest.approx(0.71, abs=6e-3)
    assert icc(r, "1,1") == pytest.approx(0.17, abs=5e-3)
    # items a judge skipped are left out
    assert icc(pd.concat([r, pd.DataFrame([[1, NAN, 3, 4]], columns=r.columns)])) == icc(r)


def test_kappa_paradox() -> None:
    # 200 items, both raters say 1 on 95%: (1,1) 185, (1,0) 5, (0,1) 5, (0,0) 5 -> percent 0.95
    # kappa: pe = .95^2 + .05^2 = .905 -> (.95 - .905) / .095 = 0.4737, "moderate" despite 95% agreement
    # AC1:   pe = 2 * .95 * .05 = .095  -> (.95 - .095) / .905 = 0.9448
    r = pairs_from_table({(1, 1): 185, (1, 0): 5, (0, 1): 5, (0, 0): 5})
    assert percent_agreement(r) == pytest.approx(0.95)
    assert cohen_kappa(r["a"], r["b"], "binary") == pytest.approx(0.045 / 0.095)
    assert gwet_ac1(r) == pytest.approx(0.855 / 0.905)
    assert fleiss_kappa(r) < 0.5 and krippendorff_alpha(r, "binary") < 0.5
    panel = panel_agreement(r, "binary", n_boot=200)
    assert panel["gwet_ac1"].value > 0.9 and panel["fleiss_kappa"].value < 0.5


# --- degenerate data -----------------------------------------------------------------------------


def all_stats(r: pd.DataFrame, scale: str = "binary") -> dict[str, float]:
    cols = list(r.columns)
    return {
        "percent": percent_agreement(r), "fleiss": fleiss_kappa(r), "alpha": krippendorff_alpha(r, scale),
        "ac1": gwet_ac1(r), "ac1_levels": gwet_ac1(r, levels=[0, 1]), "icc": icc(r),
        "kappa": cohen_kappa(r[cols[0]], r[cols[1]], scale) if len(cols) >= 2 else NAN,
    }


def test_single_category_everywhere() -> None:
    s = all_stats(frame(a=[1, 1, 1], b=[1, 1, 1], c=[1, 1, NAN]))
    # chance agreement is total: kappa, alpha and ICC are undefined; AC1 needs the second category to exist
    assert s["percent"] == 1.0 and s["ac1_levels"] == 1.0
    assert all(math.isnan(s[k]) for k in ("fleiss", "alpha", "ac1", "icc", "kappa"))
    panel = panel_agreement(frame(a=[1, 1, 1], b=[1, 1, 1]), "binary", n_boot=50)
    assert panel["gwet_ac1"].value == 1.0 and math.isnan(panel["fleiss_kappa"].value)
    assert math.isnan(panel["fleiss_kappa"].low)


@pytest.mark.parametrize("r", [
    frame(a=[1, 0, 1]),                                   # one rater
    frame(a=[NAN, NAN], b=[NAN, NAN]),                    # nothing scored
    frame(a=[1, NAN, 0], b=[NAN, 1, NAN]),                # no item rated twice
    pd.DataFrame({"a": [], "b": []}, dtype=float),        # no items
    pd.DataFrame(index=["t/0", "t/1"], dtype=float),      # no raters
])
def test_nothing_to_compare_gives_nan(r: pd.DataFrame) -> None:
    assert all(math.isnan(v) for v in all_stats(r).values())
    panel = panel_agreement(r, "binary", n_boot=20)
    assert all(math.isnan(panel[k].value) for k in ("percent_agreement", "fleiss_kappa", "gwet_ac1"))
    assert all(p["n"] == 0 for p in pairwise_agreement(r, "binary", n_boot=20))
    to_markdown({"panel": panel})


def test_two_items() -> None:
    r = frame(a=[1, 0], b=[1, 0], c=[1, 1])
    s = all_stats(r)
    assert s["percent"] == pytest.approx((1 + 1 / 3) / 2)
    assert not math.isnan(s["fleiss"]) and not math.isnan(s["ac1"])
    est = panel_agreement(r, "binary", n_boot=100)["fleiss_kappa"]
    assert est.n == 2 and (math.isnan(est.low) or est.low <= est.value <= est.high)


def test_values_outside_levels_are_an_error() -> None:
    with pytest.raises(DataError, match="not among the levels"):
        panel_agreement(frame(a=[0, 1, 2], b=[0, 1, 1]), "binary")
    with pytest.raises(DataError, match="not among the levels"):
        gwet_ac1(frame(a=[1, 2], b=[3, 2]), levels=[1, 2])
    with pytest.raises(DataError, match="numbers"):
        percent_agreement(pd.DataFrame({"a": ["yes", "no"], "b": ["yes", "yes"]}))


def test_unused_level_counts_for_ordinal_weights() -> None:
    # with levels 1..5 the jump 1 -> 3 is half the scale, not all of it
    r = frame(a=[1, 3, 3, 1, 3, 1], b=[1, 3, 1, 1, 3, 3])
    assert gwet_ac2(r, levels=[1, 2, 3, 4, 5]) != pytest.approx(gwet_ac2(r))
    # alpha's ordinal metric weighs by frequencies: an empty level adds nothing
    alpha = krippendorff_alpha(r, "ordinal")
    assert krippendorff_alpha(r, "ordinal", levels=[1, 2, 3]) == pytest.approx(alpha)


# --- bootstrap ---------------------------------------------------------------------------------------


def test_bootstrap_contains_estimate_is_seeded_and_narrows() -> None:
    small, large = noisy_panel(40), noisy_panel(1000)
    est = bootstrap(fleiss_kappa, small, n_boot=300, seed=1)
    assert est.low <= est.value <= est.high and est.n == 40
    assert est.value == fleiss_kappa(small)
    assert bootstrap(fleiss_kappa, small, n_boot=300, seed=1) == est
    assert bootstrap(fleiss_kappa, small, n_boot=300, seed=2) != est
    wide = bootstrap(gwet_ac1, small, n_boot=300)
    narrow = bootstrap(gwet_ac1, large, n_boot=300)
    assert narrow.high - narrow.low < (wide.high - wide.low) / 2


def test_bootstrap_drops_undefined_replicates_and_empty_rows() -> None:
    r = noisy_panel(30)
    r.loc["t/empty"] = NAN

    odd = {f"t/{i}" for i in range(1, 30, 2)}
    # about half the replicates (first drawn item odd) undefined: the interval comes from the others
    est = bootstrap(lambda f: NAN if f.index[0] in odd else 0.5, r, n_boot=200)
    assert est == Estimate(0.5, 0.5, 0.5, 30)  # the empty item is dropped before resampling
    # every replicate undefined: no interval, the point estimate stays
    est = bootstrap(lambda f: 0.5 if f.index.equals(r.index[:30]) else NAN, r, n_boot=200)
    assert est.value == 0.5 and math.isnan(est.low) and math.isnan(est.high)
    # undefined on the full data: no interval either
    est = bootstrap(lambda f: NAN, r, n_boot=200)
    assert math.isnan(est.value) and math.isnan(est.low) and est.n == 30
    with pytest.raises(ValueError, match="confidence"):
        bootstrap(gwet_ac1, r, confidence=95)


def test_bootstrap_kappa_fast_path_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    for q in (2, 3, 7):
        for _ in range(20):
            pairs = rng.integers(0, q, size=(rng.integers(2, 40), 2))
            pairs[:, 1] = np.where(rng.random(len(pairs)) < 0.6, pairs[:, 0], pairs[:, 1])
            for weighted in (False, True):
                expected = kappa_from_codes(pairs, q, weighted)
                got = kappa_from_table(pair_table(pairs, q), weighted)
                assert got == pytest.approx(expected, nan_ok=True)


# --- panel, pairwise, reference, reports ------------------------------------------------------------


def test_panel_and_pairwise_match_the_point_functions() -> None:
    r = noisy_panel(120).mask(np.random.default_rng(4).random((120, 3)) < 0.1)
    panel = panel_agreement(r, "binary", n_boot=100)
    assert (panel["n_items"], panel["n_raters"]) == (int(r.notna().any(axis=1).sum()), 3)
    assert panel["percent_agreement"].value == pytest.approx(percent_agreement(r))
    assert panel["fleiss_kappa"].value == pytest.approx(fleiss_kappa(r))
    assert panel["fleiss_kappa"].n == int(r.notna().all(axis=1).sum())
    assert panel["krippendorff_alpha"].value == pytest.approx(krippendorff_alpha(r, "binary"))
    assert panel["gwet_ac1"].value == pytest.approx(gwet_ac1(r))
    assert "gwet_ac2" not in panel
    pairs = pairwise_agreement(r, "binary", n_boot=100)
    assert [(p["a"], p["b"]) for p in pairs] == [("j0", "j1"), ("j0", "j2"), ("j1", "j2")]
    both = r[["j0", "j2"]].dropna()
    assert pairs[1]["n"] == len(both) == pairs[1]["cohen_kappa"].n
    assert pairs[1]["cohen_kappa"].value == pytest.approx(cohen_kappa(r["j0"], r["j2"], "binary"))
    assert pairs[1]["percent_agreement"].value == pytest.approx(float((both["j0"] == both["j2"]).mean()))
    assert pairs[1]["gwet_ac1"].value == pytest.approx(gwet_ac1(both))
    for p in pairs:
        for key in ("percent_agreement", "cohen_kappa", "gwet_ac1"):
            assert p[key].low <= p[key].value <= p[key].high


def test_ordinal_panel_uses_weighted_statistics() -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(1, 11, 80)
    r = pd.DataFrame({f"j{i}": np.clip(truth + rng.integers(-1, 2, 80), 1, 10) for i in range(3)},
                     dtype=float)
    levels = range(1, 11)
    panel = panel_agreement(r, "ordinal", levels, n_boot=100)
    assert panel["krippendorff_alpha"].value == pytest.approx(krippendorff_alpha(r, "ordinal", levels))
    assert panel["gwet_ac2"].value == pytest.approx(gwet_ac2(r, levels))
    assert panel["gwet_ac2"].value > panel["gwet_ac1"].value  # near misses count
    pair = pairwise_agreement(r, "ordinal", levels, n_boot=100)[0]
    assert pair["cohen_kappa"].value == pytest.approx(cohen_kappa(r["j0"], r["j1"], "ordinal", levels))
    assert "gwet_ac2" in pair


def test_agreement_with_reference() -> None:
    r = noisy_panel(60)
    rule = pd.Series(noisy_panel(60, raters=1, flip=0.0)["j0"].to_numpy(), index=r.index, name="rule")
    human = rule.iloc[::-1].iloc[:50].rename("human")  # other order, 10 items unlabelled
    rows = agreement_with(r.assign(human=human), human, "binary", n_boot=100, with_icc=True)
    assert [row["rater"] for row in rows] == ["j0", "j1", "j2"]  # the reference column itself is skipped
    assert all(row["reference"] == "human" and row["n"] == 50 for row in rows)
    assert rows[0]["cohen_kappa"].value == pytest.approx(cohen_kappa(r["j0"], human, "binary"))
    assert rows[0]["icc"].value == pytest.approx(icc(pd.concat([r["j0"], human], axis=1)))
    assert "icc" not in agreement_with(r, rule, "binary", n_boot=10)[0]
    nominal = agreement_with(r * 2, rule * 2, "nominal", n_boot=10, with_icc=True)
    assert math.isnan(nominal[0]["icc"].value)


def report() -> dict:
    r = noisy_panel(50)
    rule = pd.Series(np.ones(50), index=r.index, name="rule")
    return {
        "task": "vqa_rad", "field": "verdict", "scale": "binary",
        "panel": panel_agreement(r, "binary", n_boot=50),
        "pairwise": pairwise_agreement(r, "binary", n_boot=50),
        "vs_rule": agreement_with(r, rule, "binary", n_boot=50),
        # j0 says 1 everywhere like the humans: kappa and ICC undefined
        "vs_human": agreement_with(r.assign(j0=1.0)[["j0", "j1"]], rule.rename("human"), "binary", n_boot=50,
                                   with_icc=True),
    }


def test_to_markdown() -> None:
    rep = report()
    md = to_markdown(rep)
    assert md.startswith("task: vqa_rad · field: verdict · scale: binary")
    for text in ("Panel: 50 items, 3 raters.", "| Fleiss κ", "Pairwise", "rule-based metric", "human labels",
                 "ICC(2,1)", "| j0 ", "n/a", "95% bootstrap"):
        assert text in md
    e = rep["panel"]["gwet_ac1"]
    assert f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]" in md
    short = to_markdown({**rep, "vs_human": None, "pairwise": []})
    assert "human labels" not in short and "Pairwise" not in short and "rule-based" in short
    assert "Cohen κ (quadratic)" in to_markdown({"scale": "ordinal", "pairwise": rep["pairwise"]})


def test_to_json() -> None:
    rep = report()
    out = to_json(rep)
    text = json.dumps(out, allow_nan=False)  # NaN would make this raise
    back = json.loads(text)
    assert back["panel"]["n_items"] == 50 and back["scale"] == "binary"
    assert set(back["panel"]["fleiss_kappa"]) == {"value", "low", "high", "n"}
    assert back["vs_human"][0]["cohen_kappa"] == {"value": None, "low": None, "high": None, "n": 50}
    assert back["vs_human"][0]["icc"]["value"] is None and back["vs_human"][1]["icc"]["value"] is not None
    assert to_json({"panel": None, "x": Estimate(NAN, n=np.int64(0))}) == {
        "panel": None, "x": {"value": None, "low": None, "high": None, "n": 0}}
