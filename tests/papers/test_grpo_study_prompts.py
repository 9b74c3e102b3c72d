"""The GRPO study's prompt is the paper's words (../shared/papers/grpo-medvqa-study.txt): Fig. S5's "Prompt"
in the pmc_vqa variants the grpo_study_paper preset trains on and its Table 1 sweep evaluates with."""

from __future__ import annotations

from pathlib import Path

import pytest

from medharness.core.records import GenerationSettings, Sample
from medharness.core.yamlio import read_mapping
from medharness.taskfiles.task import load_task

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "papers" / "grpo-medvqa-study.txt"
pytestmark = pytest.mark.skipif(not PAPER.is_file(), reason=f"{PAPER} is absent")
INSTRUCTION = "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."


def paper() -> str:
    return " ".join(PAPER.read_text(encoding="utf-8").split())


@pytest.mark.parametrize("variant", ["r1_paper", "r1_paper_study"])
def test_the_study_prompt_word_for_word(variant: str) -> None:
    assert f"Prompt {INSTRUCTION}" in paper()  # Fig. S5
    assert "Choose between the following options:" in paper()  # Figs. S2, S3, S5
    task = load_task("pmc_vqa", {"prompt": variant})
    sample = Sample(id="1", task="pmc_vqa", question="What area of the body is the CT scan focusing on?",
                    target="B", choices=["Thorax", "Abdomen", "Head", "Limbs"])
    (turn,) = task.render(sample, GenerationSettings(max_new_tokens=8)).messages
    text = turn.content[-1].text or ""
    assert text == ("What area of the body is the CT scan focusing on? Choose between the following "
                    f"options:\nA. Thorax\nB. Abdomen\nC. Head\nD. Limbs\n{INSTRUCTION}")


def test_the_preset_and_sweep_use_it() -> None:
    preset = read_mapping(ROOT / "trainers" / "presets" / "grpo_study_paper.yaml", "preset")[0]
    sweep = read_mapping(ROOT / "trainers" / "sweeps" / "grpo_study_table1.yaml", "sweep")[0]
    assert preset["prompt"] == sweep["prompt"] == "r1_paper"
    assert sweep["eval_prompt"] == "r1_paper_study"
