"""Helpers shared by the metric modules: answer/gold text, yes/no golds, answer type, token overlap."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.normalize import harness, simple


def answer_text(answer: Answer) -> str | None:
    """The parsed value as text, or None when unparsed."""
    return None if answer.value is None else str(answer.value)


def gold_text(sample: Sample) -> str | None:
    """The gold answer as text, or None when the sample has no gold."""
    return None if sample.target is None else str(sample.target)


def gold_yes_no(sample: Sample, normalizer: Callable[[str], str] = harness) -> str | None:
    """"yes"/"no" when the gold, normalised (`harness` unless told), is exactly that word; else None."""
    gold = gold_text(sample)
    norm = normalizer(gold) if gold is not None else ""
    return norm if norm in ("yes", "no") else None


def answer_type(sample: Sample) -> str:
    """"CLOSED" or "OPEN": `sample.meta["answer_type"]`, or when absent CLOSED iff the gold is yes/no
    (the convention of the Hub VQA-RAD mirror, which has no answer_type column)."""
    value = str(sample.meta.get("answer_type") or "").strip().upper()
    if value in ("CLOSED", "OPEN"):
        return value
    return "CLOSED" if gold_yes_no(sample, simple) else "OPEN"  # the peers' rule: `simple`, as they read it


def overlap_prf(pred: list[str], gold: list[str], variant: str = "multiset") -> tuple[float, float, float]:
    """(precision, recall, F1) of token lists; `variant` "multiset" (clipped counts) or "set"."""
    if variant == "set":
        pred, gold = list(set(pred)), list(set(gold))
    elif variant != "multiset":
        raise ConfigError(f"token metrics: variant must be 'multiset' or 'set', got {variant!r}")
    if not pred or not gold:
        return 0.0, 0.0, 0.0
    if len(pred) * len(gold) <= 64:  # short answers: the clipped count directly, without building Counters
        rest, common = list(gold), 0
        for token in pred:
            if token in rest:
                rest.remove(token)
                common += 1
    else:
        common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    precision, recall = common / len(pred), common / len(gold)
    return precision, recall, 2 * precision * recall / (precision + recall)
