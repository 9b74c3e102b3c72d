"""Structured metrics: boxes (IoU) and ordinal grades (accuracy, MFRS, MAE, quadratic weighted kappa)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.boxes import as_box, box_iou
from medharness.scoring.metrics.base import metric

# --- boxes -----------------------------------------------------------------------------------


@metric("iou")
def iou(answer: Answer, sample: Sample, text: str) -> float | None:
    """IoU of the answer box with the gold box (absolute pixels); unparsed -> 0."""
    gold = as_box(sample.target)
    if gold is None:
        return None
    pred = as_box(answer.value) if answer.value is not None else None
    return 0.0 if pred is None else box_iou(pred, gold)


@metric("iou_accuracy")
def iou_accuracy(answer: Answer, sample: Sample, text: str, threshold: float = 0.5,
                 strict: bool = False) -> float | None:
    """1 if IoU >= threshold (default 0.5; with `strict`, IoU > threshold, as VRFT-Aug), else 0; \
unparsed -> 0."""
    value = iou(answer, sample, text)
    if value is None:
        return None
    return float(value > threshold if strict else value >= threshold)


# --- grades ----------------------------------------------------------------------------------


def as_grade(value: Any) -> int | None:
    """An integer grade from an int, an integral float or a digit string; else None (bools refused)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return None


def _grade_range(min_grade: int | None, max_grade: int | None, name: str) -> tuple[int, int]:
    if min_grade is None or max_grade is None or int(min_grade) > int(max_grade):
        raise ConfigError(f"{name} needs args min_grade <= max_grade (e.g. min_grade: 0, max_grade: 4)")
    return int(min_grade), int(max_grade)


@metric("grade_accuracy")
def grade_accuracy(answer: Answer, sample: Sample, text: str) -> float | None:
    """Predicted grade == gold grade; unparsed -> 0."""
    gold = as_grade(sample.target)
    if gold is None:
        return None
    return float(as_grade(answer.value) == gold)


MFRS_CREDIT = {0: 1.0, 1: 0.25, 2: 0.0625}


@metric("mfrs")
def mfrs(answer: Answer, sample: Sample, text: str) -> float | None:
    """Multi-grade fuzzy score: 1 exact, 1/4 off by one, 1/16 off by two, else 0; unparsed -> 0."""
    gold = as_grade(sample.target)
    if gold is None:
        return None
    pred = as_grade(answer.value)
    return 0.0 if pred is None else MFRS_CREDIT.get(abs(pred - gold), 0.0)


def worst_grade(gold: int, min_grade: int, max_grade: int) -> int:
    """The grade farthest from the gold (min_grade on a tie)."""
    return min_grade if gold - min_grade >= max_grade - gold else max_grade


@metric("grade_mae", higher_is_better=False, percent=False)
def grade_mae(answer: Answer, sample: Sample, text: str, min_grade: int | None = None,
              max_grade: int | None = None) -> float | None:
    """|predicted - gold| grade; unparsed -> the worst possible error in [min_grade, max_grade]."""
    low, high = _grade_range(min_grade, max_grade, "grade_mae")
    gold = as_grade(sample.target)
    if gold is None:
        return None
    pred = as_grade(answer.value)
    if pred is None:
        pred = worst_grade(gold, low, high)
    return float(abs(pred - gold))


@metric("qwk", percent=False, corpus=True)
def qwk(pairs: Sequence[tuple[Answer, Sample]], min_grade: int | None = None,
        max_grade: int | None = None) -> float:
    """Quadratic weighted kappa over labels min_grade..max_grade (sklearn's `cohen_kappa_score(weights=
    "quadratic")`, computed by `quadratic_kappa`).

    An unparsed prediction counts as the grade farthest from its gold (min_grade on a tie); parsed
    predictions outside the range are clipped to it; samples without an integer gold are skipped.
    NaN when undefined (no samples, or a single label used throughout)."""
    low, high = _grade_range(min_grade, max_grade, "qwk")
    y_true, y_pred = [], []
    for answer, sample in pairs:
        gold = as_grade(sample.target)
        if gold is None:
            continue
        pred = as_grade(answer.value)
        pred = worst_grade(gold, low, high) if pred is None else min(max(pred, low), high)
        y_true.append(gold)
        y_pred.append(pred)
    return quadratic_kappa(y_true, y_pred, low, high)


def quadratic_kappa(y_true: Sequence[int], y_pred: Sequence[int], low: int, high: int) -> float:
    """Cohen's kappa with quadratic weights over the labels low..high: 1 - sum(w * observed) / sum(w *
    expected), w[i, j] = (i - j)^2, expected = the outer product of the marginals / n; NaN when that is 0 or
    there are no items. The same value as sklearn's `cohen_kappa_score(..., weights="quadratic")` (a test
    compares them), written here because sklearn's input checks cost ~2 ms a call, and a bootstrap interval
    calls it 1,000 times per summary. Items whose gold or prediction lies outside low..high are left out, as
    sklearn does."""
    true, pred = np.asarray(y_true, dtype=np.int64) - low, np.asarray(y_pred, dtype=np.int64) - low
    k = high - low + 1
    inside = (true >= 0) & (true < k) & (pred >= 0) & (pred < k)
    true, pred = true[inside], pred[inside]
    if not true.size:
        return math.nan
    observed = np.bincount(true * k + pred, minlength=k * k).reshape(k, k).astype(float)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    grades = np.arange(k)
    weights = (grades[:, None] - grades[None, :]) ** 2
    denominator = float((weights * expected).sum())
    return math.nan if denominator == 0 else 1.0 - float((weights * observed).sum()) / denominator
