"""RARL's prompts are the paper's words (../shared/papers/rarl.txt): the reasoning and non-reasoning system
prompts of section 3.3 in every task's RARL inference variants, and Appendix A's three training prompts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medharness.core.records import Sample
from medharness.taskfiles.task import load_task

PAPER = Path(__file__).resolve().parents[3] / "shared" / "papers" / "rarl.txt"
pytestmark = pytest.mark.skipif(not PAPER.is_file(), reason="../shared/papers/rarl.txt is absent")
TASKS = ["reasoning_vqa", "vqa_rad", "slake", "vqa_med_2019", "pathvqa"]


def paper() -> str:
    return " ".join(PAPER.read_text(encoding="utf-8").split())


def quoted(label: str) -> str:
    """The quoted prompt after `label` in section 3.3 ("Reasoning prompting: "...")."""
    match = re.search(re.escape(label) + r'\*?: "([^"]+)"', paper())
    assert match, label
    return match.group(1)


def appendix(title: str) -> str:
    """An Appendix A prompt (`prompt = f"..."`), the f-string's lost braces around `question` restored."""
    match = re.search(re.escape(title) + r': prompt = f"([^"]+)"', paper())
    assert match, title
    return match.group(1).replace("User: question", "User: {question}")


def rendered(task: str, prompt: str) -> list[tuple[str, str]]:
    t = load_task(task, {"prompt": prompt})
    sample = Sample(id="1", task=task, question="{question}", target="yes",
                    meta={"answer_type": "CLOSED", "reasoning": "r"})
    return [(m.role, " ".join(p.text for p in m.content if p.text)) for m in t.render(sample,
                                                                                        t.settings()).messages]


@pytest.mark.parametrize("task", TASKS)
def test_the_inference_system_prompts_are_the_papers(task: str) -> None:
    reasoning, plain = quoted("Reasoning prompting"), quoted("Non-reasoning prompting")
    assert reasoning.startswith("A conversation between a User and a Medical Assistant. The User asks")
    for variant in ("reasoning", "reasoning_judged"):
        assert rendered(task, variant) == [("system", reasoning), ("user", "{question}")]
    for variant in ("non_reasoning", "non_reasoning_judged"):
        assert rendered(task, variant) == [("system", plain), ("user", "{question}")]


@pytest.mark.parametrize(("variant", "title"), [("explanation", "Explanation-Required Answer Prompt"),
                                                ("short", "Short-Form Answer Prompt"),
                                                ("open_ended", "Open-Ended Answer Prompt")])
def test_the_training_styles_are_appendix_a(variant: str, title: str) -> None:
    assert rendered("reasoning_vqa", variant) == [("user", appendix(title))]
