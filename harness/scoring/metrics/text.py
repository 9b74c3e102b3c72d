"""Text metrics: exact match, token overlap, yes/no, options, labels, BLEU, format, think length.

All follow the rules in `medharness.scoring.metrics.base`: None = not applicable (e.g. no gold), unparsed =
0.0.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.knowledge import knowledge_block, knowledge_file
from medharness.scoring.metrics.base import METRICS, metric
from medharness.scoring.metrics.common import answer_text, gold_text, gold_yes_no, overlap_prf
from medharness.scoring.normalize import NormalizerName, normalize, yes_no_of
from medharness.scoring.parsers.base import strip_end_markers
from medharness.scoring.parsers.structured import letter_of
from medharness.scoring.parsers.text import answer_tag, balanced_end, boxed_content, think_text

# --- exact match and token overlap -----------------------------------------------------------


@metric("exact_match")
def exact_match(answer: Answer, sample: Sample, text: str,
                normalizer: NormalizerName = "harness") -> float | None:
    """Normalised answer == normalised gold (normalizer: `harness` by default)."""
    gold, pred = gold_text(sample), answer_text(answer)
    if gold is None:
        return None
    if pred is None:
        return 0.0
    return float(normalize(pred, normalizer) == normalize(gold, normalizer))


def _token_score(answer: Answer, sample: Sample, which: int, normalizer: NormalizerName,
                 variant: str) -> float | None:
    gold = gold_text(sample)
    prf = None if gold is None else token_prf(answer_text(answer), gold, normalizer, variant)
    return None if prf is None else prf[which]


@functools.lru_cache(maxsize=1 << 16)
def token_prf(pred: str | None, gold: str, normalizer: NormalizerName,
              variant: str) -> tuple[float, float, float] | None:
    """(precision, recall, F1) of the answer's tokens against the gold's; None if the gold has no tokens;
    zeros if unparsed. Cached: token precision, recall and F1 of one row share one computation."""
    gold_tokens = normalize(gold, normalizer).split()
    if not gold_tokens:
        return None
    if pred is None:
        return 0.0, 0.0, 0.0
    return overlap_prf(normalize(pred, normalizer).split(), gold_tokens, variant)


@metric("token_precision")
def token_precision(answer: Answer, sample: Sample, text: str, normalizer: NormalizerName = "harness",
                    variant: str = "multiset") -> float | None:
    """Share of answer tokens found in the gold (multiset counts unless variant=set)."""
    return _token_score(answer, sample, 0, normalizer, variant)


@metric("token_recall")
def token_recall(answer: Answer, sample: Sample, text: str, normalizer: NormalizerName = "harness",
                 variant: str = "multiset") -> float | None:
    """Share of gold tokens found in the answer (multiset counts unless variant=set)."""
    return _token_score(answer, sample, 1, normalizer, variant)


@metric("token_f1")
def token_f1(answer: Answer, sample: Sample, text: str, normalizer: NormalizerName = "harness",
             variant: str = "multiset") -> float | None:
    """Token F1 of answer vs gold (multiset counts unless variant=set)."""
    return _token_score(answer, sample, 2, normalizer, variant)


# --- yes/no and the default VQA accuracy -----------------------------------------------------


@metric("yes_no_accuracy")
def yes_no_accuracy(answer: Answer, sample: Sample, text: str) -> float | None:
    """Strict yes/no: correct iff yes_no_of(answer) == the yes/no gold; None for other golds."""
    gold = gold_yes_no(sample)
    if gold is None:
        return None
    pred = answer_text(answer)
    return 0.0 if pred is None else float(yes_no_of(pred) == gold)


@metric("vqa_accuracy")
def vqa_accuracy(answer: Answer, sample: Sample, text: str) -> float | None:
    """Harness default: yes/no gold -> strict yes/no parse (hedge wrong); else `harness` exact match."""
    if gold_yes_no(sample) is not None:
        return yes_no_accuracy(answer, sample, text)
    return exact_match(answer, sample, text, normalizer="harness")


# --- options and labels ----------------------------------------------------------------------


@metric("choice_accuracy")
def choice_accuracy(answer: Answer, sample: Sample, text: str) -> float | None:
    """Answer letter == gold letter (gold given as a letter or as an option's text)."""
    gold = letter_of(sample.target, sample.choices) if sample.target is not None else None
    if gold is None:
        return None
    pred = answer_text(answer)
    return 0.0 if pred is None else float(pred.strip().upper() == gold)


@metric("label_accuracy")
def label_accuracy(answer: Answer, sample: Sample, text: str) -> float | None:
    """Lower-cased, stripped exact match of the class label (the VRFT accuracy reward)."""
    gold, pred = gold_text(sample), answer_text(answer)
    if gold is None:
        return None
    return 0.0 if pred is None else float(pred.strip().lower() == gold.strip().lower())


# --- BLEU ------------------------------------------------------------------------------------


@metric("bleu")
def bleu(answer: Answer, sample: Sample, text: str, reference: str = "target",
         hypothesis: str = "answer") -> float | None:
    """sacrebleu sentence BLEU / 100 (effective order) of the answer (or, with `hypothesis: think`, the
    `<think>` text) vs the gold or a meta field (e.g. `reference: reasoning`)."""
    if hypothesis not in ("answer", "think"):
        raise ConfigError(f"bleu: hypothesis must be 'answer' or 'think', got {hypothesis!r}")
    ref: Any = sample.target if reference == "target" else sample.meta.get(reference)
    if ref is None or not str(ref).strip():
        return None
    pred = answer_text(answer) if hypothesis == "answer" else think_text(text, allow_unclosed=True)
    return sentence_bleu(pred, str(ref))


def sentence_bleu(hypothesis: str | None, reference: str) -> float:
    """sacrebleu sentence BLEU / 100 with effective order (a short perfect match scores 1, not ~0); an
    empty hypothesis scores 0."""
    import sacrebleu

    if hypothesis is None or not hypothesis.strip():
        return 0.0
    return sacrebleu.sentence_bleu(hypothesis, [reference], use_effective_order=True).score / 100.0


@metric("recitation_bleu", percent=False)
def recitation_bleu(answer: Answer, sample: Sample, text: str, knowledge: str | None = None,
                    delta: float = 1.0) -> float | None:
    """VRFT-Aug's recitation reward: delta x BLEU(`<think>` text, the prompt's knowledge block for the \
sample's
    classes); `knowledge` = the knowledge file (absolute, or under tasks/knowledge/). None (does not apply)
    without a knowledge file or without choices: a reward list that gives none is refused before training."""
    if knowledge is None or not sample.choices:
        return None
    block = knowledge_block(knowledge_file(knowledge), sample.choices)
    return float(delta) * sentence_bleu(think_text(text, allow_unclosed=True), block)


# --- format and thinking ---------------------------------------------------------------------

FORMATS = ("r1", "boxed", "answer_tag", "r1_boxed", "think_boxed", "think_answer_box")


def _after_single_think(text: str) -> str | None:
    """The text after `</think>` when the output starts with one `<think>` ... `</think>` block."""
    body = strip_end_markers(text)
    low = body.lower()
    if not low.startswith("<think>") or low.count("<think>") != 1 or low.count("</think>") != 1:
        return None
    return body[low.index("</think>") + len("</think>"):].strip()


def _single_answer_tag(text: str) -> bool:
    low = text.lower()
    if low.count("<answer>") != 1 or low.count("</answer>") != 1:
        return False
    return low.startswith("<answer>") and low.endswith("</answer>") and bool(text[8:-9].strip())


def _json_box(content: str) -> bool:
    """The content parses as JSON (``` fences allowed) holding a list of exactly 4 numbers somewhere."""
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
    try:
        data = json.loads(body)
    except ValueError:
        return False
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, list) and len(node) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in node):
            return True
        stack.extend(node if isinstance(node, list) else node.values() if isinstance(node, dict) else [])
    return False


def format_ok(text: str, format: str) -> bool:
    """Whether the raw output follows `format`:
    r1: `<think>...</think>` then `<answer>...</answer>` and nothing else (one of each tag, answer non-empty);
    boxed: a balanced, non-empty `\\boxed{}` anywhere; answer_tag: a closed, non-empty `<answer>...</answer>`;
    r1_boxed: one leading `<think>...</think>` then text holding a balanced `\\boxed{}`;
    think_boxed (VRFT-Aug, strict): one leading `<think>...</think>` then `\\boxed{...}` and nothing else;
    think_answer_box (VRFT-Aug detection): r1 whose answer is JSON holding `[x1, y1, x2, y2]`.
    Trailing `<|im_end|>`/`<|endoftext|>` and surrounding whitespace are ignored."""
    if format in ("r1", "think_answer_box"):
        rest = _after_single_think(text)
        if rest is None or not _single_answer_tag(rest):
            return False
        return format == "r1" or _json_box(rest[len("<answer>"):-len("</answer>")])
    if format == "think_boxed":
        rest = _after_single_think(text)
        return rest is not None and rest.startswith("\\boxed{") and boxed_content(rest)[0] is not None \
            and balanced_end(rest, len("\\boxed{")) == len(rest)
    if format == "boxed":
        return boxed_content(text)[0] is not None
    if format == "answer_tag":
        parsed = answer_tag(text, None)
        return parsed.value is not None and parsed.note != "missing </answer>"
    if format == "r1_boxed":
        rest = _after_single_think(text)
        return rest is not None and boxed_content(rest)[0] is not None
    raise ConfigError(f"format_compliance: format must be one of {', '.join(FORMATS)}, got {format!r}")


@metric("format_compliance")
def format_compliance(answer: Answer, sample: Sample, text: str, format: str = "r1") -> float | None:
    """1 if the RAW output follows the format (r1, boxed, answer_tag, r1_boxed), else 0."""
    return float(format_ok(text, format))


@metric("think_length", percent=False)
def think_length(answer: Answer, sample: Sample, text: str) -> float | None:
    """Whitespace tokens in the think text (0 if none; an unclosed think counts to the end). Descriptive."""
    content = think_text(text, allow_unclosed=True)
    return float(len(content.split())) if content else 0.0


# --- one metric on a subset of the samples ---------------------------------------------------


@metric("where")
def where(answer: Answer, sample: Sample, text: str, metric: str = "exact_match", field: str = "",
          value: Any = None, args: dict[str, Any] | None = None) -> float | None:
    """A percent `metric` on the samples whose meta `field` equals `value`, None (left out) on the others: \
a
    per-group column, e.g. CV-Bench's Count accuracy ({metric: choice_accuracy, field: task, value:
    Count})."""
    inner = METRICS.get(metric)
    if inner.fn is None or not field:
        raise ConfigError(f"where: give a per-sample `metric` and a meta `field` (got {metric!r}, {field!r})")
    if str(sample.meta.get(field)) != str(value):
        return None
    return inner.fn(answer, sample, text, **(args or {}))
