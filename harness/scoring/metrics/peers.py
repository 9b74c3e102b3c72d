"""The peers' scoring rules, reproduced as registered metrics (traps included, on purpose).

Used by the named conventions in `medharness.scoring.conventions`; see docs/conventions.md. These metrics
exist to reproduce published numbers; the harness default (`vqa_accuracy`) avoids their traps.
"""

from __future__ import annotations

from collections import Counter

from medharness.core.records import Answer, Sample
from medharness.scoring.metrics.base import metric
from medharness.scoring.metrics.common import answer_text, answer_type, gold_text, overlap_prf
from medharness.scoring.normalize import simple, vqa_v2

# --- yesno_strict ----------------------------------------------------------------------------


def yesno_strict_parse(text: str) -> str | None:
    """`simple`-normalise; token `yes` -> yes, else token `no` -> no, else startswith yes/no; else None.

    Traps kept: "yes or no" -> yes (yes is tested first); "nodule ..." -> no (startswith)."""
    norm = simple(text)
    words = norm.split()
    if "yes" in words:
        return "yes"
    if "no" in words:
        return "no"
    if norm.startswith("yes"):
        return "yes"
    if norm.startswith("no"):
        return "no"
    return None


@metric("yesno_strict_accuracy")
def yesno_strict_accuracy(answer: Answer, sample: Sample, text: str) -> float | None:
    """CLOSED: parsed pred == parsed gold (a gold that does not parse is always wrong); OPEN: simple EM."""
    gold, pred = gold_text(sample), answer_text(answer)
    if gold is None:
        return None
    if pred is None:
        return 0.0
    if answer_type(sample) == "CLOSED":
        gold_yn = yesno_strict_parse(gold)
        return float(gold_yn is not None and yesno_strict_parse(pred) == gold_yn)
    return float(simple(pred) == simple(gold))


# --- llava_med -------------------------------------------------------------------------------


def llava_norm(text: str) -> str:
    """LLaVA-Med's normalize_word: lower-case, then the VQA-v2 punctuation/digit/article cleaning."""
    return vqa_v2(text.lower())


def _llava_pair(answer: Answer, sample: Sample, kind: str) -> tuple[str, str] | float | None:
    """(pred, gold) normalised, or the early result: None if not applicable, 0.0 if unparsed."""
    gold = gold_text(sample)
    if gold is None or answer_type(sample) != kind:
        return None
    pred = answer_text(answer)
    if pred is None:
        return 0.0
    return llava_norm(pred), llava_norm(gold)


@metric("llava_med_closed")
def llava_med_closed(answer: Answer, sample: Sample, text: str) -> float | None:
    """CLOSED: hit iff pred contains "yes" or "no" as a SUBSTRING and the gold is a substring of pred."""
    pair = _llava_pair(answer, sample, "CLOSED")
    if not isinstance(pair, tuple):
        return pair
    pred, gold = pair
    return float(("yes" in pred or "no" in pred) and gold in pred)


def llava_prf(pred: str, gold: str) -> tuple[float, float, float]:
    """LLaVA-Med's (precision, recall, F1) over word counts.

    A word in both counts with its PREDICTION count as true positives; a prediction-only word adds
    its count to false positives; a gold-only word adds its gold count to false negatives. (Differs
    from a clipped multiset F1 only when words repeat.) Empty pred/gold or no overlap -> zeros."""
    p_count, g_count = Counter(pred.split()), Counter(gold.split())
    if not p_count or not g_count:
        return 0.0, 0.0, 0.0
    tp = sum(n for w, n in p_count.items() if w in g_count)
    fp = sum(n for w, n in p_count.items() if w not in g_count)
    fn = sum(n for w, n in g_count.items() if w not in p_count)
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return precision, recall, 2 * precision * recall / (precision + recall)


def _llava_open(answer: Answer, sample: Sample, which: int) -> float | None:
    pair = _llava_pair(answer, sample, "OPEN")
    return pair if not isinstance(pair, tuple) else llava_prf(*pair)[which]


@metric("llava_med_precision")
def llava_med_precision(answer: Answer, sample: Sample, text: str) -> float | None:
    """OPEN: share of prediction words that occur in the gold (LLaVA-Med counting)."""
    return _llava_open(answer, sample, 0)


@metric("llava_med_recall")
def llava_med_recall(answer: Answer, sample: Sample, text: str) -> float | None:
    """OPEN: token-count recall of gold words in pred: the "Open" column of the LLaVA-Med paper."""
    return _llava_open(answer, sample, 1)


@metric("llava_med_f1")
def llava_med_f1(answer: Answer, sample: Sample, text: str) -> float | None:
    """OPEN: F1 of the LLaVA-Med precision and recall."""
    return _llava_open(answer, sample, 2)


@metric("llava_med_exact_match")
def llava_med_exact_match(answer: Answer, sample: Sample, text: str) -> float | None:
    """OPEN: distinct gold words found in pred / pred token count (LLaVA-Med's "exact match")."""
    pair = _llava_pair(answer, sample, "OPEN")
    if not isinstance(pair, tuple):
        return pair
    pred_words, gold_words = pair[0].split(), set(pair[1].split())
    if not pred_words:
        return 0.0
    return len(gold_words & set(pred_words)) / len(pred_words)


@metric("llava_med_open_hit")
def llava_med_open_hit(answer: Answer, sample: Sample, text: str) -> float | None:
    """OPEN: 1 if the normalised gold is a substring of the normalised pred."""
    pair = _llava_pair(answer, sample, "OPEN")
    return pair if not isinstance(pair, tuple) else float(pair[1] in pair[0])


# --- set_token_f1 ----------------------------------------------------------------------------


@metric("set_token_f1")
def set_token_f1(answer: Answer, sample: Sample, text: str) -> float | None:
    """Lower-case, delete punctuation, F1 over token SETS (GRPO-on-SLAKE studies); every sample."""
    gold, pred = gold_text(sample), answer_text(answer)
    gold_tokens = simple(gold).split() if gold is not None else []
    if not gold_tokens:
        return None
    if pred is None:
        return 0.0
    return overlap_prf(simple(pred).split(), gold_tokens, "set")[2]
