"""The RARL and GRPO-study rewards, table-tested against values computed by hand from the papers' formulas."""

from __future__ import annotations

from pathlib import Path

import pytest

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.metrics import METRICS

YES = Sample(task="t", id="q1", question="Is there a mass?", target="yes", meta={"answer_type": "CLOSED"})
MCQ = Sample(task="t", id="q2", question="Which organ?", target="B",
             choices=["liver", "lung", "heart", "kidney"])


def score(name: str, text: str, sample: Sample = YES, value: str | None = None,
          **args: object) -> float | None:
    fn = METRICS.get(name).fn
    assert fn is not None
    return fn(Answer(value=value), sample, text, **args)


@pytest.mark.parametrize(("text", "expected"), [
    ("<think>a mass in the left lung</think><answer>yes</answer>", 1.0),
    ("<think>a mass</think>\n<answer>yes</answer><|im_end|>", 1.0),       # whitespace and end marker allowed
    ("<think>a mass</think><answer>yes</answer> and more", 0.1),          # text after </answer>
    ("<think>a mass</think> yes", 0.1),                                    # think only
    ("<answer>yes</answer>", 0.1),                                         # answer only
    ("<think>unclosed reasoning", 0.1),                                    # one tag
    ("<answer></answer>", 0.1),                                            # tags, empty answer
    ("<think>a</think><think>b</think><answer>yes</answer>", 0.1),       # two think blocks
    ("yes", 0.0),
    ("", 0.0),
])
def test_rarl_format(text: str, expected: float) -> None:
    assert score("rarl_format", text) == expected


@pytest.mark.parametrize(("words", "expected"), [(0, 0.0), (1, 0.001), (250, 0.25), (999, 0.999), (1000, 1.0),
                                                 (1500, 1.0)])
def test_length_reward_cap(words: int, expected: float) -> None:
    """min(0.001 x tokens, 1.0): linear to 1,000 tokens, then capped."""
    text = " ".join(["w"] * words)
    assert score("length_reward", text) == pytest.approx(expected)
    assert score("length_reward", text, scale=0.01, cap=0.5) == pytest.approx(min(0.01 * words, 0.5))


def test_length_reward_counts_tokenizer_tokens(tmp_path: Path) -> None:
    """With a tokenizer folder the completion's own tokens are counted (the model's, as TRL's
    completion_ids)."""
    pytest.importorskip("transformers")
    from medharness.checkpoints.tiny import build_tokenizer

    tok = build_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    text = "<think>ok</think><answer>yes</answer>"
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert n != len(text.split())  # the two counts differ, so the test can tell them apart
    assert score("length_reward", text, tokenizer=str(tmp_path / "tok")) == pytest.approx(0.001 * n)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        score("length_reward", text, tokenizer=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="@model"):
        score("length_reward", text, tokenizer="@model")


@pytest.mark.parametrize(("think_words", "target", "expected"), [
    (0, 512, 0.0), (64, 512, 0.125), (256, 512, 0.5), (512, 512, 1.0), (700, 512, 1.0), (30, 100, 0.3)])
def test_extended_chain_reward(think_words: int, target: int, expected: float) -> None:
    """ECR = min(<think> tokens / target, 1)."""
    text = "<think>" + " ".join(["step"] * think_words) + "</think><answer>B</answer>"
    assert score("extended_chain_reward", text, target=target) == pytest.approx(expected)


def test_ecr_counts_an_unclosed_think_and_refuses_a_bad_target() -> None:
    assert score("extended_chain_reward", "<think>" + "a " * 128, target=256) == pytest.approx(0.5)
    assert score("extended_chain_reward", "no tags at all here", target=4) == 0.0
    with pytest.raises(ConfigError, match="target"):
        score("extended_chain_reward", "x", target=0)


@pytest.mark.parametrize(("answer", "think_words", "expected"), [
    ("B", 128, 0.25),      # correct: the ECR value 128 / 512
    ("B", 1000, 1.0),      # correct, capped
    ("A", 128, 0.0),       # wrong: no length reward however long
    (None, 128, 0.0),      # unparsed: wrong
])
def test_correctness_weighted_length(answer: str | None, think_words: int, expected: float) -> None:
    """CWR = ECR when the answer is correct (choice_accuracy = 1), else 0."""
    text = "<think>" + " ".join(["x"] * think_words) + f"</think><answer>{answer}</answer>"
    assert score("correctness_weighted_length", text, MCQ, value=answer) == pytest.approx(expected)


def test_cwr_is_none_where_its_accuracy_does_not_apply() -> None:
    no_gold = Sample(task="t", id="q3", question="?", target=None, choices=["a", "b"])
    assert score("correctness_weighted_length", "<think>x</think>", no_gold, value="A") is None
    assert score("correctness_weighted_length", "<think>x y</think>", YES, value="yes",
                 accuracy="yes_no_accuracy", target=4) == pytest.approx(0.5)


def test_think_tokens() -> None:
    assert score("think_tokens", "<think>one two three</think><answer>B</answer>") == 3.0
    assert score("think_tokens", "B") == 0.0


def test_where_scores_one_group() -> None:
    """A per-group column: the inner metric on the samples of that group, None (left out) on the others."""
    fn = METRICS.get("where").fn
    assert fn is not None
    count = Sample(task="t", id="c", question="?", target="(B)", choices=["1", "2"], meta={"task": "Count"})
    depth = count.model_copy(update={"meta": {"task": "Depth"}})
    args = {"metric": "choice_accuracy", "field": "task", "value": "Count"}
    assert fn(Answer(value="B"), count, "", **args) == 1.0
    assert fn(Answer(value="A"), count, "", **args) == 0.0
    assert fn(Answer(value=None), count, "", **args) == 0.0  # unparsed: zero credit, counted
    assert fn(Answer(value="B"), depth, "", **args) is None
    with pytest.raises(ConfigError, match="field"):
        fn(Answer(value="B"), count, "", metric="choice_accuracy")
