"""VRFT-Aug as written (issue 21, items 11-16): App. A.5's two prompt templates word for word, read from
the paper's own text (../shared/papers/vrft-aug.txt); the V-SFT rows on the paper's schedule, fully
fine-tuned; the 256-shot BreastMNIST / RetinaMNIST cells on every training image; the test subsets the
published denominators fit; COVID-19's PA_P prompt; every VRFT sweep evaluates with at least its training
completion length."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medharness.taskfiles.task import load_task
from medharness.trainers.sweeps.schema import eval_tasks, expand, load_sweep
from medharness.trainers.sweeps.stages import Stages

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "papers" / "vrft-aug.txt"
SWEEPS = {name: ROOT / "trainers" / "sweeps" / f"{name}.yaml"
          for name in ("vrft_aug_table1", "vrft_aug_table2", "vrft_aug_table3", "vrft_aug_figure3")}
KNOWLEDGE_TASKS = ("medmnist_breast", "medmnist_pneumonia", "medmnist_oct", "medmnist_retina",
                   "medmnist_derma", "medmnist_tissue", "medmnist_blood", "medmnist_organa", "ham10000",
                   "covid_severity")
needs_paper = pytest.mark.skipif(not PAPER.is_file(), reason="../shared/papers/vrft-aug.txt is absent")


def flat(text: str) -> str:
    return " ".join(text.split())


def paper_template(heading: str, end: str) -> str:
    """A template box of App. A.5, as the paper prints it (its code-span backticks removed)."""
    text = PAPER.read_text(encoding="utf-8")
    start = text.index(heading, text.index("A.5. Prompt Template for Localization Task")) + len(heading)
    return flat(text[start:text.index(end, start)].replace("`", ""))


@needs_paper
@pytest.mark.parametrize("task", KNOWLEDGE_TASKS)
def test_pa_p_prompts_are_the_appendix_template_word_for_word(task: str) -> None:
    """Each `knowledge` variant is App. A.5's "Prompt Template", its slots filled: the same {lesion/organ}
    twice, and the class block where the paper writes {Class Names : Visual Attributes}."""
    template = paper_template("Prompt Template\n", "We need to construct")
    slots = {"{data modality}": "(?P<modality>.+?)", "{lesion/organ}": "(?P<organ>.+?)",
             "{Class Names : Visual Attributes}": re.escape("{knowledge}")}
    pattern = "".join(slots.get(part, re.escape(part))
                      for part in re.split(r"(\{data modality\}|\{lesion/organ\}|\{Class Names : Visual "
                                           r"Attributes\})", template))
    pattern = pattern.replace("(?P<organ>.+?)", "(?P=organ)").replace("(?P=organ)", "(?P<organ>.+?)", 1)
    user = load_task(task, {"prompt": "knowledge"}).config.prompts.variants["knowledge"].user
    rendered = flat(user.replace("{{", "{").replace("}}", "}"))  # str.format's escapes, as the prompt renders
    match = re.fullmatch(pattern, rendered)
    assert match, f"{task}: {rendered!r} is not App. A.5's template {template!r}"
    assert match["modality"] and match["organ"]


@needs_paper
@pytest.mark.parametrize(("task", "target"), [("ham10000_bbox", "skin lesion"),
                                              ("heel_bbox", "heel bone region")])
def test_box_vrft_is_the_detection_template_word_for_word(task: str, target: str) -> None:
    """App. A.5's "Prompt Template for Detection Task" with the paper's targets (App. A.2: skin lesions in
    HAM10000, "the heel bone region" in Heel); boxes read in Qwen2.5-VL's own (resized-pixel) convention."""
    template = paper_template("Prompt Template for Detection Task\n", "A.6. Limitation")
    loaded = load_task(task, {"prompt": "box_vrft"})
    assert flat(loaded.prompt_spec.user) == template.replace("*{target object}*", target)
    assert "resized" in str(loaded.prompt_spec.parser)


def test_covid_severity_renders_its_grades_with_their_descriptions(tmp_path: Path) -> None:
    """Item 15: the grades 0-6 are the classes, so `names` lists them and `knowledge` (PA_P) gives each its
    description, as Table 3's COVID-19 column needs."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    (tmp_path / "test.csv").write_text("image,grade\na.png,3\n", encoding="utf-8")
    names = load_task("covid_severity", {"data_dir": str(tmp_path), "prompt": "names"})
    sample = names.load_samples()[0]
    assert sample.choices == tuple("0123456") and str(sample.target) == "3"
    listed = names.render(sample, names.settings()).messages[-1].content[-1].text
    assert "from: 0, 1, 2, 3, 4, 5, 6." in listed
    knowledge = load_task("covid_severity", {"data_dir": str(tmp_path), "prompt": "knowledge"})
    text = knowledge.render(sample, knowledge.settings()).messages[-1].content[-1].text
    lines = [line for line in text.splitlines() if re.match(r"[0-6]: ", line)]
    assert [line[0] for line in lines] == list("0123456") and lines[-1].endswith(".")
    assert "six lung zones" in lines[3] and text.rstrip().endswith("\\boxed{...}.")


def _stages(name: str) -> tuple[Stages, list]:  # type: ignore[type-arg]
    sweep = load_sweep(SWEEPS[name])
    return Stages(sweep, SWEEPS[name], ROOT / "runs" / "not-written" / name, resume=False), expand(sweep)


def _train_config(stages: Stages, cell) -> dict:  # type: ignore[no-untyped-def, type-arg]
    from medharness.trainers.cli import parse_train_args, train_request
    from medharness.trainers.run import resolve

    argv = stages.train_args(cell, stages.cell_model(cell, build=False), stages.split_file(cell), False)
    config, _ = resolve(train_request(parse_train_args(argv)))
    return config.model_dump()


@pytest.mark.parametrize("name", ["vrft_aug_table1", "vrft_aug_table2", "vrft_aug_table3"])
def test_v_sft_trains_on_the_papers_schedule(name: str) -> None:
    """Item 11: "120 steps, using a batch size of 256 ... learning rate of 1e-6 for both SFT and RL", "fully
    fine-tuned": SFT counts samples, 8 x 32 = 256 a step on one GPU."""
    pytest.importorskip("trl")
    stages, cells = _stages(name)
    sft = [c for c in cells if c.entry.recipe == "sft"]
    assert sft
    try:
        for cell in sft[:2]:
            config = _train_config(stages, cell)
            trl = config["trl"]
            assert (trl["max_steps"], trl["learning_rate"], config["freeze_vision"]) == (120, 1e-6, False)
            assert trl["per_device_train_batch_size"] * trl["gradient_accumulation_steps"] == 256
    finally:
        stages.close()


@pytest.mark.parametrize("name", ["vrft_aug_table1", "vrft_aug_table2", "vrft_aug_table3"])
def test_256_shots_take_every_breast_and_retina_image(name: str) -> None:
    """Item 12: "up to 256 images per class, except for RetinaMNIST and BreastMNIST"."""
    stages, cells = _stages(name)
    try:
        for cell in cells:
            whole = cell.shots == 256 and cell.task in ("medmnist_breast", "medmnist_retina")
            assert (stages.split_file(cell) is None) is whole, cell.id
    finally:
        stages.close()


def test_test_sets_fit_the_published_denominators() -> None:
    """Item 13: OCT (1/256), Tissue and Blood (1/512), OrganA (1/704): 64 per class, seeded; Breast,
    Pneumonia, Retina (their full test splits fit) and Derma (no size fits) on the whole split (Tables 1,
    2)."""
    balanced = {"medmnist_oct", "medmnist_tissue", "medmnist_blood", "medmnist_organa"}
    for name in ("vrft_aug_table1", "vrft_aug_table2"):
        e = load_sweep(SWEEPS[name]).eval
        for task in load_sweep(SWEEPS[name]).tasks:
            assert e.subset_k(task) == (64 if task in balanced else None), (name, task)
        assert e.subset_seed == 0
    for name in ("vrft_aug_table3", "vrft_aug_figure3"):
        assert load_sweep(SWEEPS[name]).eval.per_class is None


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_evaluation_runs_with_at_least_the_training_completion_length(name: str) -> None:
    """Item 1 kept true: the sweeps set the 1,024-token budget themselves, so nothing is raised or cut."""
    pytest.importorskip("trl")
    stages, cells = _stages(name)
    try:
        assert stages.sweep.eval.max_new_tokens == 1024
        for cell in cells:
            trained = stages.trained_budget(cell)
            for task in eval_tasks(stages.sweep, cell):
                budget, replaced = stages.eval_budget(cell, task)
                assert replaced is None and (trained is None or budget >= trained), (cell.id, task)
    finally:
        stages.close()


def test_figure3_pa_pi_uses_the_papers_prompts_and_fewer_samples() -> None:
    """Item 14: stage 1 on M < N samples with `box_vrft`; stage 2 with PA_P where the catalogue has it."""
    sweep = load_sweep(SWEEPS["vrft_aug_figure3"])
    pa_pi = next(e for e in sweep.entries() if e.key == "pa_pi")
    assert pa_pi.prompt == "box_vrft" and "samples.limit=1000" in pa_pi.overrides
    assert pa_pi.eval_prompt == {"ham10000": "knowledge", "heel": "names"}
