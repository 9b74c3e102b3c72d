"""Model-backed metrics: BERTScore, a cross-encoder similarity and a causal LM's perplexity of the reasoning.

Each model is a setting (`model:` a local folder, or a hub id when online), loaded once per process
(torch and transformers are imported only when one of these metrics scores). They are descriptive metrics of
the GRPO study and RARL, and rewards where a training run names them.

- `bertscore`: BERTScore F1 (the `bert-score` package) of the answer vs the gold (`model`, `num_layers`).
- `rarl_accuracy`: RARL's accuracy reward: binary for closed and yes/no questions (strict yes/no for a yes/no
  gold, else `simple` exact match) and for multiple choice (`choice_accuracy`), BERTScore F1 for open ones.
- `reasoning_similarity`: a cross-encoder's score of (the `<think>` text, the reference): the gold answer (an
  option's letter and text for choice questions) or a meta field (`reference: reasoning`, RARL's annotated
  reasoning; None where the sample has none). A one-label cross-encoder's logit goes through a sigmoid, as
  sentence-transformers' `CrossEncoder` does (written here with transformers to avoid that dependency).
- `reasoning_perplexity`: exp(mean negative log-likelihood per predicted token) of the `<think>` text under a
  causal LM, the tokenizer's special tokens included as it adds them; None without a think text.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.core.torchvision_shim import ensure_torchvision_importable
from medharness.scoring.metrics.base import metric
from medharness.scoring.metrics.common import answer_text, answer_type, gold_text, gold_yes_no
from medharness.scoring.metrics.text import choice_accuracy, vqa_accuracy
from medharness.scoring.parsers.structured import letter_of
from medharness.scoring.parsers.text import think_text

CROSS_ENCODER = "cross-encoder/stsb-roberta-base"
CAUSAL_LM = "microsoft/biogpt"
BERTSCORE_MODEL, BERTSCORE_LAYERS = "roberta-large", 17  # bert-score's own default for English


def _load_error(kind: str, name: str, exc: Exception) -> ConfigError:
    return ConfigError(f"{kind} model {name!r} cannot be loaded (give a local folder as the metric's `model` "
                       f"argument when offline): {type(exc).__name__}: {exc}")


@lru_cache(maxsize=4)
def _bert_scorer(model: str, num_layers: int) -> Any:
    ensure_torchvision_importable()
    try:
        from bert_score import BERTScorer
    except ImportError:
        raise ConfigError("bertscore needs the bert-score package: pip install 'medharness[train]'") from None
    try:
        return BERTScorer(model_type=model, num_layers=num_layers, device="cpu" if not _cuda() else None)
    except Exception as exc:  # noqa: BLE001
        raise _load_error("BERTScore", model, exc) from None


@lru_cache(maxsize=4)
def _pair_model(kind: str, name: str) -> tuple[Any, Any]:
    ensure_torchvision_importable()
    import transformers

    cls = {"cross-encoder": transformers.AutoModelForSequenceClassification,
           "causal-lm": transformers.AutoModelForCausalLM}[kind]
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
        model = cls.from_pretrained(name).eval()
    except Exception as exc:  # noqa: BLE001
        raise _load_error(kind, name, exc) from None
    return tokenizer, model


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def bertscore_f1(candidate: str, reference: str, model: str = BERTSCORE_MODEL,
                 num_layers: int = BERTSCORE_LAYERS) -> float:
    """BERTScore F1 of one pair (no idf weighting, no baseline rescaling)."""
    _, _, f1 = _bert_scorer(model, int(num_layers)).score([candidate], [reference])
    return float(f1[0])


@metric("bertscore")
def bertscore(answer: Answer, sample: Sample, text: str, model: str = BERTSCORE_MODEL,
              num_layers: int = BERTSCORE_LAYERS) -> float | None:
    """BERTScore F1 of the answer vs the gold (`model`: a local folder or hub id; `num_layers`)."""
    gold, pred = gold_text(sample), answer_text(answer)
    if gold is None or not gold.strip():
        return None
    if pred is None or not pred.strip():
        return 0.0
    return bertscore_f1(pred, gold, model, num_layers)


@metric("rarl_accuracy")
def rarl_accuracy(answer: Answer, sample: Sample, text: str, model: str = BERTSCORE_MODEL,
                  num_layers: int = BERTSCORE_LAYERS) -> float | None:
    """RARL accuracy: binary for closed / yes-no / multiple-choice questions, BERTScore F1 for open ones."""
    if sample.choices:
        return choice_accuracy(answer, sample, text)
    if answer_type(sample) == "CLOSED" or gold_yes_no(sample) is not None:
        return vqa_accuracy(answer, sample, text)
    return bertscore(answer, sample, text, model, num_layers)


def reference_text(sample: Sample, reference: str) -> str | None:
    """The gold answer as text (`target`; "B. option" when it names an option) or a meta field; None if
    absent."""
    if reference != "target":
        value = sample.meta.get(reference)
        return str(value).strip() if value is not None and str(value).strip() else None
    gold = gold_text(sample)
    if gold is None or not gold.strip():
        return None
    letter = letter_of(gold, sample.choices) if sample.choices else None
    return f"{letter}. {sample.choices[ord(letter) - 65]}" if letter else gold.strip()


def cross_encoder_score(first: str, second: str, model: str = CROSS_ENCODER) -> float:
    """The cross-encoder's score of a text pair (sigmoid of a one-label logit; softmax class 1 otherwise)."""
    import torch

    tokenizer, net = _pair_model("cross-encoder", model)
    # RoBERTa counts positions from its padding index + 1: at most max_position_embeddings - 2 tokens fit
    limit = min(512, tokenizer.model_max_length, int(getattr(net.config, "max_position_embeddings", 514)) - 2)
    enc = tokenizer(first, second, truncation=True, max_length=limit, return_tensors="pt")
    with torch.no_grad():
        logits = net(**enc).logits[0]
    if logits.shape[-1] == 1:
        return float(torch.sigmoid(logits[0]))
    return float(torch.softmax(logits, dim=-1)[1])


@metric("reasoning_similarity", percent=False)
def reasoning_similarity(answer: Answer, sample: Sample, text: str, model: str = CROSS_ENCODER,
                         reference: str = "target") -> float | None:
    """Cross-encoder similarity of the <think> text to the gold answer (or a meta field, e.g. reasoning)."""
    ref = reference_text(sample, reference)
    if ref is None:
        return None
    think = think_text(text, allow_unclosed=True)
    if not think:
        return 0.0
    return cross_encoder_score(think, ref, model)


def perplexity(text: str, model: str = CAUSAL_LM) -> float | None:
    """exp(mean token NLL) of `text` under a causal LM; None with fewer than two tokens."""
    import torch

    tokenizer, net = _pair_model("causal-lm", model)
    ids = tokenizer(text, return_tensors="pt", truncation=True,
                    max_length=min(1024, tokenizer.model_max_length))["input_ids"]
    if ids.shape[1] < 2:
        return None
    with torch.no_grad():
        loss = net(input_ids=ids, labels=ids).loss  # mean NLL of tokens 2..n given the ones before
    return math.exp(float(loss))


@metric("reasoning_perplexity", higher_is_better=False, percent=False)
def reasoning_perplexity(answer: Answer, sample: Sample, text: str, model: str = CAUSAL_LM) -> float | None:
    """Perplexity of the <think> text under a causal LM (microsoft/biogpt by default); None without one."""
    think = think_text(text, allow_unclosed=True)
    return perplexity(think, model) if think else None
