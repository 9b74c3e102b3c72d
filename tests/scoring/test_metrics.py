"""Metrics: hand-computed values for text, yes/no, options, boxes, grades, BLEU, format and thinking."""

from __future__ import annotations

import math
from typing import Any

import pytest

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.metrics import METRICS, resolve_metrics

OPTIONS = ("pneumonia", "edema", "normal")


def score(name: str, value: Any, target: Any, text: str = "", choices: tuple[str, ...] = (),
          meta: dict[str, Any] | None = None, **args: Any) -> float | None:
    sample = Sample(id="s", task="t", question="q", target=target, choices=choices, meta=meta or {})
    fn = METRICS.get(name).fn
    assert fn is not None
    return fn(Answer(value=value, parser="test"), sample, text, **args)


def corpus(name: str, pairs: list[tuple[Any, Any]], **args: Any) -> float:
    fn = METRICS.get(name).corpus
    assert fn is not None
    return fn([(Answer(value=p), Sample(id=str(i), task="t", question="q", target=g))
               for i, (p, g) in enumerate(pairs)], **args)


def test_registered_metric_properties() -> None:
    assert METRICS.get("grade_mae").higher_is_better is False
    assert METRICS.get("grade_mae").percent is False
    assert METRICS.get("think_length").percent is False and METRICS.get("think_length").higher_is_better
    assert METRICS.get("qwk").corpus is not None and METRICS.get("qwk").fn is None
    assert METRICS.get("exact_match").description.startswith("Normalised answer")
    specs = resolve_metrics([{"name": "token_f1", "args": {"variant": "set"}, "as": "f1_set"}, "iou"])
    assert [s.label for s in specs] == ["f1_set", "iou"]


@pytest.mark.parametrize("value, target, args, expected", [
    ("Yes.", "yes", {}, 1.0),
    ("The MRI", "mri", {"normalizer": "vqa_v2"}, 1.0),
    ("The MRI", "mri", {}, 0.0),
    ("X-ray", "x ray", {"normalizer": "mumc"}, 1.0),
    ("Left", "left", {"normalizer": "none"}, 0.0),
    (None, "left", {}, 0.0),  # unparsed: zero credit
    ("left", None, {}, None),  # no gold: not applicable
    (2, "2", {}, 1.0),  # non-text values compare as text
])
def test_exact_match(value: Any, target: Any, args: dict[str, Any], expected: float | None) -> None:
    assert score("exact_match", value, target, **args) == expected


@pytest.mark.parametrize("value, target, variant, expected", [
    # (precision, recall, f1)
    ("left lung left", "left lung", "multiset", (2 / 3, 1.0, 0.8)),
    ("left lung left", "left lung", "set", (1.0, 1.0, 1.0)),
    ("right lung", "Left lung.", "multiset", (0.5, 0.5, 0.5)),
    ("the right lower lobe", "right lower lobe", "multiset", (0.75, 1.0, 6 / 7)),
    ("...", "left", "multiset", (0.0, 0.0, 0.0)),
    (None, "left", "multiset", (0.0, 0.0, 0.0)),
    ("left", "", "multiset", (None, None, None)),
])
def test_token_overlap(value: Any, target: str, variant: str, expected: tuple[Any, ...]) -> None:
    got = tuple(score(f"token_{m}", value, target, variant=variant) for m in ("precision", "recall", "f1"))
    assert got == pytest.approx(expected) if expected[0] is not None else got == expected


def test_token_overlap_bad_variant() -> None:
    with pytest.raises(ConfigError):
        score("token_f1", "a", "a", variant="bag")


@pytest.mark.parametrize("value, target, yes_no, vqa", [
    ("yes, there is", "Yes", 1.0, 1.0),
    ("No.", "no", 1.0, 1.0),
    ("yes or no", "yes", 0.0, 0.0),  # hedge is wrong
    ("nodule", "no", 0.0, 0.0),
    ("not", "no", 0.0, 0.0),
    ("abnormal", "no", 0.0, 0.0),
    (None, "no", 0.0, 0.0),
    ("mri", "MRI", None, 1.0),  # not a yes/no gold: exact match
    ("an mri", "MRI", None, 0.0),
    ("abnormal", "abnormal", None, 1.0),
])
def test_yes_no_and_vqa_accuracy(value: Any, target: str, yes_no: float | None, vqa: float) -> None:
    assert score("yes_no_accuracy", value, target) == yes_no
    assert score("vqa_accuracy", value, target) == vqa


@pytest.mark.parametrize("value, target, expected", [
    ("B", "B", 1.0), ("B", "edema", 1.0), ("C", "edema", 0.0), ("b", "B", 1.0),
    (None, "B", 0.0), ("B", "zzz", None), ("B", "Z", None),
])
def test_choice_accuracy(value: Any, target: str, expected: float | None) -> None:
    assert score("choice_accuracy", value, target, choices=OPTIONS) == expected


@pytest.mark.parametrize("value, target, expected", [
    ("Melanoma ", "melanoma", 1.0), ("nevus", "melanoma", 0.0), (None, "melanoma", 0.0),
])
def test_label_accuracy(value: Any, target: str, expected: float) -> None:
    assert score("label_accuracy", value, target) == expected


@pytest.mark.parametrize("pred, gold, iou, hit", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0, 1.0),
    ([5, 5, 15, 15], [0, 0, 10, 10], 25 / 175, 0.0),  # inter 5x5, union 100+100-25
    ([0, 0, 10, 5], [0, 0, 10, 10], 0.5, 1.0),  # exactly the threshold counts
    ([0, 0, 10, 4.9], [0, 0, 10, 10], 0.49, 0.0),
    ([20, 20, 30, 30], [0, 0, 10, 10], 0.0, 0.0),
    ([10, 0, 20, 10], [0, 0, 10, 10], 0.0, 0.0),  # touching edges
    (None, [0, 0, 10, 10], 0.0, 0.0),
    ([10, 10, 0, 0], [0, 0, 10, 10], 0.0, 0.0),  # a reversed box is unusable
    ([0, 0, 10, 10], "left", None, None),  # no gold box
])
def test_iou(pred: Any, gold: Any, iou: float | None, hit: float | None) -> None:
    got = score("iou", pred, gold)
    assert got == pytest.approx(iou) if iou is not None else got is None
    assert score("iou_accuracy", pred, gold) == hit


def test_iou_accuracy_threshold() -> None:
    assert score("iou_accuracy", [5, 5, 15, 15], [0, 0, 10, 10], threshold=0.1) == 1.0


@pytest.mark.parametrize("pred, gold, acc, fuzzy, mae", [
    (2, 2, 1.0, 1.0, 0.0),
    (1, 2, 0.0, 0.25, 1.0),
    (4, 2, 0.0, 0.0625, 2.0),
    (5, 2, 0.0, 0.0, 3.0),
    ("3", 2, 0.0, 0.25, 1.0),
    (None, 2, 0.0, 0.0, 2.0),  # worst error: 2 - 0 = 4 - 2, tie -> grade 0
    (None, 1, 0.0, 0.0, 3.0),  # worst error: grade 4
    (None, 4, 0.0, 0.0, 4.0),
    (2.5, 2, 0.0, 0.0, 2.0),  # not an integer grade: unparsed
])
def test_grades(pred: Any, gold: int, acc: float, fuzzy: float, mae: float) -> None:
    assert score("grade_accuracy", pred, gold) == acc
    assert score("mfrs", pred, gold) == fuzzy
    assert score("grade_mae", pred, gold, min_grade=0, max_grade=4) == mae


def test_grade_mae_needs_range() -> None:
    with pytest.raises(ConfigError):
        score("grade_mae", 1, 1)
    assert score("grade_mae", 1, "n/a", min_grade=0, max_grade=4) is None


@pytest.mark.parametrize("pairs, expected", [
    # Hand-computed: O = [[1,0,0],[0,0,1],[0,1,1]], row/col sums [1,1,2]; W = (i-j)^2;
    # sum W.O = 2, sum W.E = 5.5 -> 1 - 2/5.5 = 7/11.
    ([(0, 0), (2, 1), (2, 2), (1, 2)], 7 / 11),
    # The unparsed prediction for gold 1 is the farthest grade (tie -> 0): preds [0,0,2,1]:
    # sum W.O = 2, sum W.E = 6.5 -> 9/13.
    ([(0, 0), (None, 1), (2, 2), (1, 2)], 9 / 13),
    ([(0, 0), (1, 1), (2, 2)], 1.0),
    # 7 is clipped to 2: preds [2,1,2]; col sums [0,1,2]; sum W.O = 4, sum W.E = 3 + 2/3 + 1/3 = 4 -> 0.
    ([(7, 0), (1, 1), (2, 2)], 0.0),
])
def test_qwk(pairs: list[tuple[Any, int]], expected: float) -> None:
    assert corpus("qwk", pairs, min_grade=0, max_grade=2) == pytest.approx(expected)


def test_qwk_agrees_with_sklearn_and_handles_degenerate_input() -> None:
    from sklearn.metrics import cohen_kappa_score

    gold, pred = [0, 1, 2, 3, 4, 2, 1], [0, 2, 2, 3, 3, 1, 1]
    want = cohen_kappa_score(gold, pred, weights="quadratic", labels=[0, 1, 2, 3, 4])
    assert corpus("qwk", list(zip(pred, gold)), min_grade=0, max_grade=4) == pytest.approx(want)
    assert math.isnan(corpus("qwk", [], min_grade=0, max_grade=4))
    assert math.isnan(corpus("qwk", [(1, 1), (1, 1)], min_grade=0, max_grade=4))


@pytest.mark.parametrize("value, target, meta, args, expected", [
    ("left lower lobe", "left lower lobe", {}, {}, 1.0),  # perfect 3 tokens: 1.0 with effective order
    ("left lobe", "left lower lobe", {}, {}, math.exp(1 - 3 / 2) * math.sqrt(1 * 0.5)),  # BP x exp-smoothed
    ("right", "left lower lobe", {}, {}, 0.0),
    (None, "left", {}, {}, 0.0),
    ("a b c", "x", {"knowledge": "a b c"}, {"reference": "knowledge"}, 1.0),
    ("a b c", "x", {}, {"reference": "knowledge"}, None),
])
def test_bleu(value: Any, target: str, meta: dict[str, Any], args: dict[str, Any],
              expected: float | None) -> None:
    got = score("bleu", value, target, meta=meta, **args)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize("text, fmt, expected", [
    ("<think>a</think><answer>b</answer>", "r1", 1.0),
    ("<think>a</think>\n<answer>b</answer><|im_end|>", "r1", 1.0),
    ("<answer>b</answer>", "r1", 0.0),
    ("<think>a</think><answer>b", "r1", 0.0),  # missing </answer>
    ("<think>a</think><answer>b</answer> extra", "r1", 0.0),
    ("<think>a</think><think>c</think><answer>b</answer>", "r1", 0.0),
    ("<think>a</think><answer> </answer>", "r1", 0.0),
    ("<think>a</think><answer>b</answer><answer>c</answer>", "r1", 0.0),
    ("<think>a</think> so \\boxed{x}", "r1", 0.0),
    ("<think>a</think> so \\boxed{x}", "r1_boxed", 1.0),
    ("so \\boxed{x}", "r1_boxed", 0.0),
    ("<think>a</think> \\boxed{x", "r1_boxed", 0.0),
    ("so \\boxed{x}", "boxed", 1.0),
    ("\\boxed{{x}", "boxed", 0.0),
    ("blah <answer>b</answer>", "answer_tag", 1.0),
    ("<answer>b", "answer_tag", 0.0),
    ("<answer> </answer>", "answer_tag", 0.0),
    ("", "r1", 0.0),
])
def test_format_compliance(text: str, fmt: str, expected: float) -> None:
    # Read from the raw text: the parsed value does not matter.
    assert score("format_compliance", None, "gold", text=text, format=fmt) == expected


def test_format_compliance_unknown_format() -> None:
    with pytest.raises(ConfigError):
        score("format_compliance", None, "gold", text="x", format="xml")


@pytest.mark.parametrize("text, expected", [
    ("<think>one two  three\nfour</think><answer>x</answer>", 4.0),
    ("no think", 0.0),
    ("<think>a b c d", 4.0),  # unclosed: counted to the end
    ("a b</think> c", 2.0),
    ("<think></think>", 0.0),
])
def test_think_length(text: str, expected: float) -> None:
    assert score("think_length", None, "gold", text=text) == expected


@pytest.mark.parametrize("text", ["yes no " * 150_000, "<think>" + "a " * 500_000,
                                  "\\boxed{" * 140_000, "é" * 1_000_000])
@pytest.mark.timeout(300)  # a hang guard against quadratic blow-ups, not a speed target
def test_every_metric_survives_a_megabyte(text: str) -> None:

    args = {"grade_mae": {"min_grade": 0, "max_grade": 4},
            "where": {"metric": "token_f1", "field": "answer_type", "value": "OPEN"}}
    # model- and judge-backed metrics need a model or a panel (their inputs are truncated by the model's
    # tokenizer): tests/scoring/test_metrics_models.py and tests/judges/test_judge_metric.py
    needs_model = {"bertscore", "rarl_accuracy", "reasoning_similarity", "reasoning_perplexity",
                   "judge_score", "judge_rate"}
    for name, m in METRICS.items():
        if m.fn is None or name in needs_model:
            continue
        for value in (text, None):
            got = m.fn(Answer(value=value), Sample(id="s", task="t", question="q", target="left lung",
                                                 choices=OPTIONS, meta={"answer_type": "OPEN"}), text,
                       **args.get(name, {}))
            assert got is None or isinstance(got, float)


def test_bleu_of_the_reasoning_against_a_meta_field() -> None:
    from medharness.core.records import Answer, Sample
    from medharness.scoring.metrics import METRICS

    fn = METRICS.get("bleu").fn
    sample = Sample(id="1", task="t", question="q", target="yes",
                    meta={"reasoning": "the left lung is clear"})
    text = "<think>the left lung is clear</think><answer>yes</answer>"
    assert fn(Answer(value="yes"), sample, text, reference="reasoning",
              hypothesis="think") == pytest.approx(1.0)
    assert fn(Answer(value="yes"), sample, "<answer>yes</answer>", reference="reasoning",
              hypothesis="think") == 0.0
    with pytest.raises(ConfigError):
        fn(Answer(value="yes"), sample, text, hypothesis="raw")


def test_choice_accuracy_accepts_parenthesised_gold_letters() -> None:
    from medharness.core.records import Answer, Sample
    from medharness.scoring.metrics import METRICS

    fn = METRICS.get("choice_accuracy").fn
    sample = Sample(id="1", task="t", question="q", target="(B)", choices=("left", "right"))
    assert fn(Answer(value="B"), sample, "B") == 1.0
    assert fn(Answer(value="A"), sample, "A") == 0.0


def test_quadratic_kappa_equals_sklearn() -> None:
    """`quadratic_kappa` (numpy: the bootstrap calls it 1,000 times) against sklearn's cohen_kappa_score on
    random grades, constant columns and golds outside the labels included; NaN where sklearn has no value."""
    import warnings

    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    from medharness.scoring.metrics.structured import quadratic_kappa

    rng = np.random.default_rng(0)
    compared = 0
    for case in range(2000):
        low, high = int(rng.integers(0, 2)), int(rng.integers(2, 6))
        n = int(rng.integers(1, 30))
        y_true = rng.integers(low - 1, high + 2, n).tolist()
        y_pred = rng.integers(low, high + 1, n).tolist()
        if case % 7 == 0:
            y_pred = [y_true[0]] * n
        if case % 11 == 0:
            y_true = [y_true[0]] * n
        got = quadratic_kappa(y_true, y_pred, low, high)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                expected = float(cohen_kappa_score(y_true, y_pred, labels=list(range(low, high + 1)),
                                                   weights="quadratic"))
            except ValueError:  # no item inside the labels
                assert math.isnan(got)
                continue
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)
        compared += 1
    assert compared > 1800
