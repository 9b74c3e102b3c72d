"""The RARL and GRPO-study rewards through `medharness reward`, exactly as training scores them, against
values computed by hand from the papers' formulas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.taskfiles.task import load_task

pytest.importorskip("transformers")


def reward_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], texts: list[str],
                *args: str) -> list[dict]:
    sample = next(s for s in load_task("phantom_presence").load_samples("test") if s.target == "yes")
    file = tmp_path / "completions.jsonl"
    file.write_text("".join(json.dumps({"sample_id": sample.id, "text": t}) + "\n" for t in texts))
    capsys.readouterr()
    assert main(["reward", "--task", "phantom_presence", "--prompt", "r1", "--completions", str(file),
                 "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_rarl_rewards_through_the_reward_command(tmp_path: Path, tiny_models: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--recipe rarl: format 1 / 0.1 / 0, length 0.001 x the model's tokens, binary accuracy for yes/no, and
    no reasoning reward (None) where the sample has no annotated reasoning."""
    from transformers import AutoTokenizer

    model = tiny_models["qwen2_vl"]
    texts = ["<think>a bright spot</think><answer>yes</answer>", "<think>no spot</think><answer>no</answer>",
             "<answer>yes</answer>", "yes"]
    rows = reward_rows(tmp_path, capsys, texts, "--recipe", "rarl", "--model", str(model))
    tok = AutoTokenizer.from_pretrained(model)
    tokens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert [r["rewards"]["rarl_format"] for r in rows] == [1.0, 1.0, 0.1, 0.0]
    assert [r["rewards"]["length_reward"] for r in rows] == pytest.approx([0.001 * n for n in tokens])
    assert [r["rewards"]["rarl_accuracy"] for r in rows] == [1.0, 0.0, 1.0, 0.0]
    assert [r["rewards"]["reasoning_similarity"] for r in rows] == [None] * 4
    # the reasoning reward is left out (None): the weights renormalised over the three present, x 4/3
    assert [r["total"] for r in rows] == pytest.approx([4 / 3 * (2 + 0.001 * tokens[0]),
                                                        4 / 3 * (1 + 0.001 * tokens[1]),
                                                        4 / 3 * (1.1 + 0.001 * tokens[2]),
                                                        4 / 3 * 0.001 * tokens[3]])


def test_ecr_and_cwr_through_the_reward_command(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The study's extra rewards (whitespace tokens here): ECR = min(n / target, 1); CWR = ECR only when
    correct."""
    spec = json.dumps([{"metric": "yes_no_accuracy"},
                       {"metric": "extended_chain_reward", "args": {"target": 8}, "as": "ecr"},
                       {"metric": "correctness_weighted_length",
                        "args": {"accuracy": "yes_no_accuracy", "target": 8}, "as": "cwr"}])
    texts = ["<think>one two three four</think><answer>yes</answer>",
             "<think>one two three four</think><answer>no</answer>",
             "<think>" + "w " * 20 + "</think><answer>yes</answer>", "yes"]
    rows = reward_rows(tmp_path, capsys, texts, "--rewards", spec)
    assert [r["rewards"]["ecr"] for r in rows] == [0.5, 0.5, 1.0, 0.0]
    # "yes" alone: r1 needs <answer>: unparsed
    assert [r["rewards"]["cwr"] for r in rows] == [0.5, 0.0, 1.0, 0.0]
