"""Reasoning-shaped rewards of the RARL paper and the GRPO study, as metrics (rule-based, no model).

- `rarl_format`: 1.0 for exactly `<think>...</think><answer>...</answer>` (the `r1` format), 0.1 when some of
  those four tags are there but not in that form ("partial tags"), 0.0 with none of them.
- `length_reward`: min(scale x tokens, cap) on the whole completion (RARL: scale 0.001, cap 1.0).
- `extended_chain_reward` (ECR, GRPO study): min(n / target, 1) with n the tokens of the `<think>` text: grows
  linearly with the reasoning's length until `target` tokens, then stays at 1 (the paper gives no formula;
  this linear, capped form and target 512 are medharness's choice, both settings).
- `correctness_weighted_length` (CWR): the ECR value when the answer is correct (the `accuracy` metric gives
  1), else 0; None where that metric does not apply.

Tokens are whitespace-separated words by default, or the tokens of `tokenizer` (a local folder or hub id;
in a training reward list `@model` means the model being trained, resolved by trainers/rewards.py).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.metrics.base import METRICS, metric
from medharness.scoring.metrics.text import format_ok
from medharness.scoring.parsers.base import strip_end_markers
from medharness.scoring.parsers.text import think_text

RARL_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@lru_cache(maxsize=4)
def _tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - a missing folder or hub id reads differently per version
        raise ConfigError(f"tokenizer {name!r} cannot be loaded (a local folder or hub id): {exc}") from None


def count_tokens(text: str, tokenizer: str | None = None) -> int:
    """Tokens of `text`: whitespace words (tokenizer None) or the tokenizer's ids without special tokens."""
    if tokenizer is None:
        return len(text.split())
    if tokenizer.startswith("@"):
        raise ConfigError(f"tokenizer {tokenizer!r}: '@model' is resolved only in training reward lists")
    return len(_tokenizer(tokenizer)(text, add_special_tokens=False)["input_ids"])


@metric("rarl_format", percent=False)
def rarl_format(answer: Answer, sample: Sample, text: str) -> float | None:
    """RARL format reward: 1.0 for <think>...</think><answer>...</answer>, 0.1 for partial tags, else 0."""
    if format_ok(text, "r1"):
        return 1.0
    low = text.lower()
    return 0.1 if any(tag in low for tag in RARL_TAGS) else 0.0


@metric("length_reward", percent=False)
def length_reward(answer: Answer, sample: Sample, text: str, scale: float = 0.001, cap: float = 1.0,
                  tokenizer: str | None = None) -> float | None:
    """min(scale x completion tokens, cap) (RARL: 0.001 and 1.0); whitespace tokens unless `tokenizer`."""
    if scale < 0 or cap < 0:
        raise ConfigError(f"length_reward: scale and cap must be >= 0, got {scale}, {cap}")
    return min(scale * count_tokens(strip_end_markers(text), tokenizer), cap)


def _think_tokens(text: str, tokenizer: str | None) -> int:
    content = think_text(text, allow_unclosed=True)
    return count_tokens(content, tokenizer) if content else 0


@metric("extended_chain_reward", percent=False)
def extended_chain_reward(answer: Answer, sample: Sample, text: str, target: int = 512,
                          tokenizer: str | None = None) -> float | None:
    """ECR: min(<think> tokens / target, 1): grows with the reasoning's length, capped at 1."""
    if target < 1:
        raise ConfigError(f"extended_chain_reward: target must be >= 1 token, got {target}")
    return min(_think_tokens(text, tokenizer) / target, 1.0)


@metric("correctness_weighted_length", percent=False)
def correctness_weighted_length(answer: Answer, sample: Sample, text: str, accuracy: str = "choice_accuracy",
                                target: int = 512, tokenizer: str | None = None) -> float | None:
    """CWR: the ECR value when the `accuracy` metric scores the answer 1, else 0 (None where it does not \
apply)."""
    acc = METRICS.get(accuracy)
    if acc.fn is None:
        raise ConfigError(f"correctness_weighted_length: accuracy metric {accuracy} is a corpus metric")
    correct = acc.fn(answer, sample, text)
    if correct is None:
        return None
    return extended_chain_reward(answer, sample, text, target, tokenizer) if correct == 1.0 else 0.0


@metric("think_tokens", percent=False)
def think_tokens(answer: Answer, sample: Sample, text: str, tokenizer: str | None = None) -> float | None:
    """Tokens of the <think> text (the GRPO study's thinking length): `tokenizer`'s, or whitespace words."""
    return float(_think_tokens(text, tokenizer))
