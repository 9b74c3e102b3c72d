"""Metrics for golds with several acceptable answers: boxes of several objects, answers with alternatives.

- `best_iou` / `best_iou_accuracy`: the sample's target is a list of gold boxes (e.g. every red blood cell of
  a BCCD image) or a single box; the prediction is ONE box (absolute pixels, as `json_bbox` gives it), scored
  by its IoU with the best-matching gold box. "Give the box of one RBC" is answered right by any RBC.
- `reference_accuracy` / `reference_token_f1`: the gold uses the ImageCLEF VQA-Med 2019 reference syntax:
  `#` separates alternatives (any one is correct) and `( )` marks an optional part (the answer may include or
  omit it). A yes/no gold needs a strict yes/no answer, as in the harness default.

All follow `medharness.scoring.metrics.base`: None = not applicable (no usable gold), unparsed = 0.0.
"""

from __future__ import annotations

import re
from typing import Any

from medharness.core.records import Answer, Sample
from medharness.scoring.boxes import as_box, box_iou
from medharness.scoring.metrics.base import metric
from medharness.scoring.metrics.common import answer_text, overlap_prf
from medharness.scoring.normalize import harness, yes_no_of

# --- boxes -------------------------------------------------------------------------------------


def gold_boxes(target: Any) -> list[list[float]]:
    """The gold boxes of a target: one box [x1, y1, x2, y2], or a list of them; [] when neither."""
    single = as_box(target) if isinstance(target, (list, tuple)) and len(target) == 4 and \
        not any(isinstance(v, (list, tuple)) for v in target) else None
    if single is not None:
        return [single]
    if isinstance(target, (list, tuple)) and target and all(isinstance(t, (list, tuple)) for t in target):
        boxes = [as_box(t) for t in target]
        return [b for b in boxes if b is not None] if all(b is not None for b in boxes) else []
    return []


@metric("best_iou")
def best_iou(answer: Answer, sample: Sample, text: str) -> float | None:
    """IoU of the answer box with the best-matching gold box (target: a box or a list of boxes); \
unparsed -> 0."""
    golds = gold_boxes(sample.target)
    if not golds:
        return None
    pred = as_box(answer.value) if answer.value is not None else None
    return 0.0 if pred is None else max(box_iou(pred, g) for g in golds)


@metric("best_iou_accuracy")
def best_iou_accuracy(answer: Answer, sample: Sample, text: str, threshold: float = 0.5) -> float | None:
    """1 if the best-matching gold box has IoU >= threshold (default 0.5), else 0; unparsed -> 0."""
    value = best_iou(answer, sample, text)
    return None if value is None else float(value >= threshold)


# --- answers with alternatives and optional parts ------------------------------------------------

_OPTIONAL = re.compile(r"\([^()]*\)")


def reference_answers(gold: str) -> list[str]:
    """Every accepted form of a VQA-Med reference, `harness`-normalised, in order and without repeats:
    per `#` alternative, the text with its optional `( )` parts kept, then with them dropped."""
    out: list[str] = []
    for alternative in str(gold).split("#"):
        for form in (alternative.replace("(", " ").replace(")", " "), _OPTIONAL.sub(" ", alternative)):
            norm = harness(form)
            if norm and norm not in out:
                out.append(norm)
    return out


def _forms_and_prediction(answer: Answer, sample: Sample) -> tuple[list[str], str | None]:
    """The gold's accepted forms and the predicted text (None when unparsed)."""
    forms = reference_answers(sample.target) if sample.target is not None else []
    return forms, answer_text(answer)


@metric("reference_accuracy")
def reference_accuracy(answer: Answer, sample: Sample, text: str) -> float | None:
    """Exact match (`harness`) with any accepted form of the gold (`#` alternatives, `( )` optional parts);
    a yes/no gold needs a strict yes/no answer; unparsed -> 0."""
    forms, pred = _forms_and_prediction(answer, sample)
    if not forms:
        return None
    if pred is None:
        return 0.0
    if set(forms) <= {"yes", "no"} and len(forms) == 1:
        return float(yes_no_of(pred) == forms[0])
    return float(harness(pred) in forms)


@metric("reference_token_f1")
def reference_token_f1(answer: Answer, sample: Sample, text: str) -> float | None:
    """Best token F1 (`harness`, multiset) over the accepted forms of the gold; unparsed -> 0."""
    forms, pred = _forms_and_prediction(answer, sample)
    if not forms:
        return None
    if pred is None:
        return 0.0
    tokens = harness(pred).split()
    return max(overlap_prf(tokens, form.split())[2] for form in forms)
