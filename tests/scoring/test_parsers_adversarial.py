"""Adversarial model outputs (tests/data/fuzz/outputs/*.jsonl) scored through the shipped tasks' own recipes.

Each case names a task, a prompt variant, a gold, an output, and what the scorer must say: parsed or not, and
the primary metric's value. Under the harness convention a hedge is unparsed (no credit) and Unicode or markup
never changes a word; under a peer convention the peer's rule holds, traps included (docs/conventions.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medharness.core.records import Generation, Sample
from medharness.scoring.normalize import normalize
from medharness.taskfiles.task import load_task, recipe_for

CORPUS = Path(__file__).resolve().parents[1] / "data" / "fuzz" / "outputs"
CASES = [json.loads(line) for path in sorted(CORPUS.glob("*.jsonl"))
         for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(case: dict[str, Any]) -> tuple[bool, float | None, str]:
    """(parsed, primary metric value, parser note) of one case."""
    task = load_task(case["task"])
    recipe = recipe_for(task, case.get("convention"), case["prompt"])
    sample = Sample(id="1", task=task.name, question="q", target=case["gold"],
                    choices=tuple(case.get("choices", ())), meta=case.get("meta", {}))
    answer, scores = recipe.score(sample, Generation(sample_id="1", text=case["text"]))
    return answer.parsed, scores.get(recipe.metrics[0].label), answer.note


def test_the_corpus_covers_each_kind_of_case() -> None:
    whys = " ".join(c["why"] for c in CASES)
    assert len(CASES) >= 40
    assert {"hedge", "zero-width", "full-width", "markup", "yesno_strict", "set_token_f1", "mumc"} <= {
        w.strip(":(),'") for w in whys.split()} | {c.get("convention", "") for c in CASES}
    assert sum(not c["parsed"] for c in CASES) >= 10  # hedges that must get no score


@pytest.mark.parametrize("case", CASES,
                         ids=lambda c: f"{c.get('convention', 'harness')}-{c['task']}-{c['why'][:40]}")
def test_adversarial_output(case: dict[str, Any]) -> None:
    parsed, value, note = score(case)
    assert parsed == case["parsed"], f"{case['why']}: parsed={parsed} ({note})"
    assert value == case["score"], f"{case['why']}: {value}"
    if not parsed:
        assert note, "an unparsed answer says why"


def test_hedges_are_counted_as_unparsed_in_the_summary() -> None:
    """A hedge never earns credit and is counted in n_unparsed, like any unparsed answer."""
    from medharness.core.records import ResultRow
    from medharness.scoring.recipe import summarise

    task = load_task("vqa_rad")
    recipe = recipe_for(task)
    rows = []
    for i, text in enumerate(["yes\nno", "<answer>no</answer> yes", "yes", "ｙｅｓ。"]):
        sample = Sample(id=str(i), task="vqa_rad", question="q", target="yes")
        answer, scores = recipe.score(sample, Generation(sample_id=str(i), text=text))
        rows.append(ResultRow(task="vqa_rad", task_version="1", sample=sample, prompt_hash="h",
                              generation=Generation(sample_id=str(i), text=text),
                              answer=answer, scores=scores))
    summary = summarise(rows, recipe, [], "vqa_rad", "1")
    assert summary.n_unparsed == 2
    assert summary.metrics["vqa_accuracy"].value == 0.5


@pytest.mark.parametrize("text, expected", [
    ("<answer>no</answer> yes", "no yes"),
    ("yes\u200b", "yes"), ("Yes。", "yes"), ("yes！", "yes"), ("ｙｅｓ", "yes"), ("\u00adye\u00ads", "yes"),
    (r"\boxed{\text{Left}}", "left"), ("<|im_end|>", ""), ("T2-weighted, Left.", "t2weighted left"),
    ("肺，心脏。", "肺心脏"), ("a<5 mm", "a5 mm"), ("x < y > z", "x y z"),
])
def test_harness_normaliser(text: str, expected: str) -> None:
    assert normalize(text, "harness") == expected


def test_peer_normalisers_are_unchanged_by_the_harness_rules() -> None:
    """`simple` (the peers' yesno_strict and set_token_f1 read text with it) still deletes ASCII punctuation
    only."""
    assert normalize("<answer>no</answer> yes", "simple") == "answernoanswer yes"
    assert normalize("ｙｅｓ。", "simple") == "ｙｅｓ。"
    assert normalize("yes\u200b", "simple") == "yes\u200b"
