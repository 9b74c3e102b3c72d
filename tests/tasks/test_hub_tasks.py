"""The hub / reasoning task files (pathvqa, pmc_vqa, cv_bench, reasoning_vqa) on tiny fixtures in each
source's real schema, read through the task's own source: a local parquet folder in hub layout for `hf`
sources (the real `datasets.load_dataset` path, offline), CSV / JSON plus an image folder for `local` ones.
Then: ids, targets, choices and answer types; gold-as-prediction scores 1 and a wrong answer 0 under every
prompt variant; every variant renders; the files validate."""

from __future__ import annotations

import io
import json
import string
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medharness.cli_output import validate_files
from medharness.core.records import Generation, Sample
from medharness.scoring.recipe import Recipe
from medharness.taskfiles.task import Task, discover_tasks, load_task, recipe_for

TASKS = ("pathvqa", "pmc_vqa", "cv_bench", "reasoning_vqa")
R1_VARIANTS = {"r1", "explanation", "short", "open_ended", "reasoning", "reasoning_judged", "r1_study",
               "r1_paper", "r1_paper_study", "r1_by_task"}  # answer inside <answer> tags
# RARL's reasoning system prompt, word for word, names no tags (the trained policy writes them; the answer is
# still read from <answer>): tests/papers/test_rarl_prompts.py
PAPER_WORDS = {"reasoning", "reasoning_judged"}
# metrics that call a model or a judge panel (tested with local models and a local server in
# tests/scoring/test_metrics_models.py and tests/judges/test_judge_metric.py): left out of the offline checks
NEEDS_MODEL = {"bertscore", "rarl_accuracy", "reasoning_similarity", "reasoning_perplexity", "judge_score",
               "judge_rate"}


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def hub_folder(root: Path, splits: dict[str, dict[str, list[Any]]], image_column: str = "image") -> Path:
    """A folder in the hub's parquet layout (data/{split}-00000-of-00001.parquet), images as PNG bytes."""
    datasets = pytest.importorskip("datasets")
    data = root / "data"
    data.mkdir(parents=True)
    for split, columns in splits.items():
        ds = datasets.Dataset.from_dict(columns)
        if image_column in columns:
            ds = ds.cast_column(image_column, datasets.Image())
        ds.to_parquet(str(data / f"{split}-00000-of-00001.parquet"))
    return root


def with_local_hub(name: str, folder: Path, **overrides: Any) -> dict[str, Any]:
    """-T overrides that keep the task's own hf source (splits, image column, columns) but read `folder`."""
    config = load_task(name).config
    sources = [s.model_dump(exclude_none=True) for s in config.sources]
    hub = next(s for s in sources if s["kind"] == "hf")
    hub["dataset"] = str(folder)
    return {"sources": [hub], "check_sizes": False, **overrides}


# --- fixtures in each source's schema ---------------------------------------------------------


@pytest.fixture()
def pathvqa_hub(tmp_path: Path) -> Path:
    """flaviagiammarino/path-vqa: image, question, answer (no id, no answer type)."""
    return hub_folder(tmp_path / "path-vqa", {
        "test": {
            "image": [{"bytes": png((255, 0, 0)), "path": None}, {"bytes": png((0, 255, 0)), "path": None},
                      {"bytes": png((0, 0, 255)), "path": None}],
            "question": ["is there evidence of necrosis?", "where are liver stem cells located?",
                         "does this image show fibrosis?"],
            "answer": ["yes", "in the canals of hering", "no"],
        },
        "validation": {
            "image": [{"bytes": png((9, 9, 9)), "path": None}],
            "question": ["what is present?"],
            "answer": ["granuloma"],
        },
    })


@pytest.fixture()
def cv_bench_hub(tmp_path: Path) -> Path:
    """nyu-visionx/CV-Bench: idx, type, task, image, question, choices (list), answer '(A)', prompt."""
    questions = ["How many cars are in the image?",
                 "Considering the relative positions of the lamp and the sofa, where is the lamp located?",
                 "Which is closer to the camera, the chair or the table?"]
    choices = [["2", "3", "1", "0", "4"], ["left", "right"], ["chair", "table"]]
    prompts = [q + " Select from the following choices.\n"
               + "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(cs))
               for q, cs in zip(questions, choices, strict=True)]
    return hub_folder(tmp_path / "cv-bench", {"test": {
        "idx": [0, 1, 2],
        "type": ["2D", "2D", "3D"],
        "task": ["Count", "Relation", "Depth"],
        "image": [{"bytes": png((1, 2, 3)), "path": None}] * 3,
        "question": questions,
        "choices": choices,
        "answer": ["(B)", "(A)", "(B)"],
        "prompt": prompts,
    }})


@pytest.fixture()
def pmc_vqa_dir(tmp_path: Path) -> Path:
    """test_clean.csv in the PMC-VQA v1 layout (options carry an 'A:' prefix) + figures/."""
    root = tmp_path / "pmc-vqa"
    (root / "figures").mkdir(parents=True)
    rows = [
        ["PMC1064097_F1.jpg", "What is the uptake pattern in the breast?", "Focal uptake pattern",
         "A:Diffuse uptake pattern", "B:Focal uptake pattern", "C:No uptake pattern",
         "D:Cannot determine from the information given", "B"],
        ["PMC2000000_F2.jpg", "Which imaging modality was used?", "MRI",
         " A:CT ", " B:Ultrasound ", " C:MRI ", " D:X-ray ", "C"],
    ]
    for name, colour in (("PMC1064097_F1.jpg", (200, 0, 0)), ("PMC2000000_F2.jpg", (0, 200, 0))):
        Image.new("RGB", (8, 8), colour).save(root / "figures" / name)
    import csv

    with (root / "test_clean.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D",
                         "Answer_label"])
        writer.writerows(rows)
    return root


@pytest.fixture()
def reasoning_dir(tmp_path: Path) -> Path:
    """{split}.json list of {id, image, question, answer, reasoning, answer_type} + images/."""
    root = tmp_path / "reasoning"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (50, 60, 70)).save(root / "images" / "case1.png")
    Image.new("RGB", (8, 8), (70, 60, 50)).save(root / "images" / "case2.png")
    records = [
        {"id": "r-1", "image": "case1.png", "question": "Is there a pleural effusion?", "answer": "yes",
         "reasoning": "The left costophrenic angle is blunted with a meniscus sign, typical of fluid.",
         "answer_type": "CLOSED"},
        {"id": "r-2", "image": "case2.png", "question": "Which organ is enlarged?", "answer": "spleen",
         "reasoning": "The organ in the left upper quadrant extends below the costal margin: splenomegaly.",
         "answer_type": "OPEN"},
    ]
    (root / "test.json").write_text(json.dumps(records), encoding="utf-8")
    return root


# --- helpers ---------------------------------------------------------------------------------


def gold_text(task: Task, sample: Sample) -> str:
    """What a perfect model answers under the task's scoring: the letter for options, else the gold."""
    target = str(sample.target)
    if sample.choices:
        return target.strip("() ")
    return target


def wrong_text(task: Task, sample: Sample) -> str:
    if sample.choices:
        gold = gold_text(task, sample)
        return next(chr(65 + i) for i in range(len(sample.choices)) if chr(65 + i) != gold)
    return "no" if str(sample.target).lower() == "yes" else "definitely not that"


def wrap(variant: str, answer: str, sample: Sample) -> str:
    if variant in R1_VARIANTS:
        reasoning = sample.meta.get("reasoning") or "Looking at the image carefully."
        return f"<think>{reasoning}</think><answer>{answer}</answer>"
    return answer


def primary_metric(task: Task) -> str:
    return {"pmc_vqa": "choice_accuracy", "cv_bench": "choice_accuracy"}.get(task.name, "vqa_accuracy")


def check_scoring(task: Task, samples: list[Sample]) -> None:
    """Gold-as-prediction = 1 and a wrong answer = 0 under every variant; format metrics follow the format."""
    metric = primary_metric(task)
    for variant in task.config.prompts.variants:
        full = recipe_for(task, prompt=variant)
        offline = [m for m in full.metrics if m.metric.name not in NEEDS_MODEL
                   and not m.args.get("tokenizer")]
        recipe = Recipe(full.convention, full.parser, offline)
        for sample in samples:
            right_text = wrap(variant, gold_text(task, sample), sample)
            _, right = recipe.score(sample, Generation(sample_id=sample.id, text=right_text))
            assert right[metric] == 1.0, (task.name, variant, sample.id, right)
            wrong_answer = wrap(variant, wrong_text(task, sample), sample)
            _, wrong = recipe.score(sample, Generation(sample_id=sample.id, text=wrong_answer))
            assert wrong[metric] == 0.0, (task.name, variant, sample.id, wrong)
            if variant in R1_VARIANTS:
                assert right["format_compliance"] == 1.0
                assert right.get("think_length", 1) > 0  # where the variant reports it
                # no <answer> tag: unparsed and scored 0, never rescued from the free text
                bare_text = gold_text(task, sample)
                answer, bare = recipe.score(sample, Generation(sample_id=sample.id, text=bare_text))
                assert answer.value is None and bare[metric] == 0.0 and bare["format_compliance"] == 0.0


def placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def check_rendering(name: str, overrides: dict[str, Any], sample_index: int = 0) -> None:
    """Every variant renders (as `-T NAME.prompt=V` would select it), with the image and the question."""
    for variant in load_task(name).config.prompts.variants:
        task = load_task(name, {**overrides, "prompt": variant})
        sample = task.load_samples()[sample_index]
        prompt = task.render(sample, task.settings())
        user = prompt.messages[-1]
        text = next(p.text for p in user.content if p.type == "text")
        assert [p.image for p in user.content if p.type == "image"] == list(sample.images)
        assert sample.question in text or ("prompt" in sample.meta and text == sample.meta["prompt"])
        if variant in R1_VARIANTS - PAPER_WORDS:
            system = prompt.messages[0].content[0].text if prompt.messages[0].role == "system" else ""
            assert "<answer>" in text + system and "<think>" in text + system
        if sample.choices and variant != "official":
            assert f"A. {sample.choices[0]}" in text
        spec = task.prompt_spec
        assert (prompt.messages[0].role == "system") == bool(spec.system)
        # only question-side placeholders: nothing gold-derived (answer, answer_type, reasoning) is prompted
        assert placeholders(spec.user) | placeholders(spec.system or "") <= {"question", "choices", "prompt"}


# --- the tests ---------------------------------------------------------------------------------


def test_task_files_validate() -> None:
    paths = [discover_tasks()[name] for name in TASKS]
    assert validate_files(paths) == 0


def test_every_task_has_plain_and_r1() -> None:
    for name in TASKS:
        variants = load_task(name).config.prompts.variants
        assert {"plain", "r1"} <= set(variants), name
        assert variants["r1"].parser and variants["r1"].parser[0] == "answer_tag"


def test_pathvqa_hub_layout(pathvqa_hub: Path) -> None:
    overrides = with_local_hub("pathvqa", pathvqa_hub)
    task = load_task("pathvqa", overrides)
    assert task.config.card.sizes == {"train": 19654, "validation": 6259, "test": 6719}
    samples = task.load_samples()
    assert [s.id for s in samples] == ["0", "1", "2"]  # no id column: the row index
    assert [s.target for s in samples] == ["yes", "in the canals of hering", "no"]
    assert [s.meta["answer_type"] for s in samples] == ["CLOSED", "OPEN", "CLOSED"]
    assert all(s.meta["answer_type_derived"] for s in samples)
    assert all(s.choices == () for s in samples)
    assert samples[2].images == ("hf:test/2",)
    assert task.open_image("hf:test/2").getpixel((0, 0)) == (0, 0, 255)
    assert [s.target for s in task.load_samples("validation")] == ["granuloma"]
    assert task.config.group_by == ["answer_type"]
    check_scoring(task, samples)
    check_rendering("pathvqa", overrides)


def test_pathvqa_card_size_check(pathvqa_hub: Path) -> None:
    from medharness.core.errors import DataError

    overrides = with_local_hub("pathvqa", pathvqa_hub)
    overrides.pop("check_sizes")
    with pytest.raises(DataError, match="expects 6719 test samples"):
        load_task("pathvqa", overrides).load_samples()


def test_pmc_vqa_local_csv(pmc_vqa_dir: Path) -> None:
    overrides = {"data_dir": str(pmc_vqa_dir), "check_sizes": False}
    task = load_task("pmc_vqa", overrides)
    assert task.config.split == "test_clean" and task.config.card.sizes == {"test_clean": 2000}
    samples = task.load_samples()
    assert [s.id for s in samples] == ["0", "1"]
    assert [s.target for s in samples] == ["B", "C"]  # Answer_label, the option letter
    # the CSV's "A:" letter prefixes are stripped (columns.strip_choice_letters)
    assert samples[0].choices == ("Diffuse uptake pattern", "Focal uptake pattern", "No uptake pattern",
                                  "Cannot determine from the information given")
    assert samples[1].choices == ("CT", "Ultrasound", "MRI", "X-ray")
    assert samples[0].images == ("figures/PMC1064097_F1.jpg",)
    assert task.open_image(samples[1].images[0]).getpixel((0, 0)) == (0, 200, 0)
    assert "answer_type" not in samples[0].meta  # nothing gold-derived is available to the prompt
    check_scoring(task, samples)
    check_rendering("pmc_vqa", overrides)

    recipe = recipe_for(task)
    sample = samples[0]

    def score(text: str) -> tuple[Any, float]:
        answer, scores = recipe.score(sample, Generation(sample_id=sample.id, text=text))
        return answer.value, scores["choice_accuracy"]

    assert score("(B)") == ("B", 1.0)
    assert score("The answer is B.") == ("B", 1.0)
    assert score("B: Focal uptake pattern") == ("B", 1.0)
    assert score("Focal uptake pattern") == ("B", 1.0)  # the bare option text
    assert score("A or B") == (None, 0.0)  # several letters: unparsed, not a guess
    assert score("E") == (None, 0.0)  # out of range
    assert score("I am not sure") == (None, 0.0)


def test_pmc_vqa_needs_local_data() -> None:
    from medharness.core.errors import DataError

    with pytest.raises(DataError, match="pass --data-dir"):
        load_task("pmc_vqa").load_samples()


def test_cv_bench_hub_layout(cv_bench_hub: Path) -> None:
    overrides = with_local_hub("cv_bench", cv_bench_hub)
    task = load_task("cv_bench", overrides)
    samples = task.load_samples()
    assert [s.id for s in samples] == ["0", "1", "2"]  # idx
    assert [s.target for s in samples] == ["(B)", "(A)", "(B)"]
    assert samples[0].choices == ("2", "3", "1", "0", "4")
    assert samples[1].choices == ("left", "right")
    assert [(s.meta["task"], s.meta["type"]) for s in samples] == [("Count", "2D"), ("Relation", "2D"),
                                                                     ("Depth", "3D")]
    assert task.config.group_by == ["task", "type"]
    assert task.open_image("hf:test/1").getpixel((0, 0)) == (1, 2, 3)
    check_rendering("cv_bench", overrides)
    official = load_task("cv_bench", {**overrides, "prompt": "official"})
    text = official.render(samples[1], official.settings()).messages[-1].content[-1].text
    assert text.endswith("(A) left\n(B) right")


def test_cv_bench_parenthesised_gold_letters_score(cv_bench_hub: Path) -> None:
    """The hub gold is '(B)': the parsed letter is compared with it after `simple` normalisation."""
    task = load_task("cv_bench", with_local_hub("cv_bench", cv_bench_hub))
    samples = task.load_samples()
    check_scoring(task, samples)
    recipe = recipe_for(task)

    def score(index: int, text: str) -> tuple[Any, float]:
        answer, scores = recipe.score(samples[index], Generation(sample_id=samples[index].id, text=text))
        return answer.value, scores["choice_accuracy"]

    assert score(0, "(B)") == ("B", 1.0)
    assert score(0, "3") == ("B", 1.0)  # the option's text
    assert score(1, "left") == ("A", 1.0)
    assert score(1, "C") == (None, 0.0)  # out of range for a two-option question
    assert score(2, "A or B") == (None, 0.0)
    assert score(2, "") == (None, 0.0)


def test_reasoning_vqa_local_json(reasoning_dir: Path) -> None:
    overrides = {"data_dir": str(reasoning_dir)}
    task = load_task("reasoning_vqa", overrides)
    samples = task.load_samples()
    assert [s.id for s in samples] == ["r-1", "r-2"]
    assert [s.target for s in samples] == ["yes", "spleen"]
    assert [s.meta["answer_type"] for s in samples] == ["CLOSED", "OPEN"]
    assert samples[0].meta["reasoning"].startswith("The left costophrenic angle")
    assert samples[1].images == ("images/case2.png",)
    assert task.open_image("images/case1.png").getpixel((0, 0)) == (50, 60, 70)
    assert set(task.config.prompts.variants) == {"plain", "r1", "explanation", "short", "open_ended",
                                                 "reasoning", "non_reasoning", "reasoning_judged",
                                                 "non_reasoning_judged"}
    check_scoring(task, samples)
    check_rendering("reasoning_vqa", overrides)
    for variant in ("reasoning", "non_reasoning"):
        t = load_task("reasoning_vqa", {**overrides, "prompt": variant})
        prompt = t.render(samples[0], t.settings())
        assert prompt.messages[0].role == "system"
        assert prompt.messages[1].content[-1].text == samples[0].question
    # no prompt uses the reference reasoning (it would leak the gold)
    for spec in task.config.prompts.variants.values():
        assert "{reasoning}" not in spec.user and "{reasoning}" not in (spec.system or "")


def test_reasoning_vqa_truncated_think_is_unparsed(reasoning_dir: Path) -> None:
    task = load_task("reasoning_vqa", {"data_dir": str(reasoning_dir), "prompt": "r1"})
    sample = task.load_samples()[0]
    truncated = Generation(sample_id=sample.id, text="<think>The angle is")
    answer, scores = recipe_for(task).score(sample, truncated)
    assert answer.value is None and scores["vqa_accuracy"] == 0.0 and scores["format_compliance"] == 0.0


def test_pmc_vqa_hub_source_reads_test_clean_by_name(pmc_vqa_dir: Path) -> None:
    """The hub repo is a folder of CSVs: `data_files` picks test_clean.csv (not test.csv) as the split."""
    pytest.importorskip("datasets")
    (pmc_vqa_dir / "test.csv").write_text((pmc_vqa_dir / "test_clean.csv").read_text().replace("MRI", "PET"))
    (pmc_vqa_dir / "train.csv").write_text((pmc_vqa_dir / "test_clean.csv").read_text())
    task = load_task("pmc_vqa", with_local_hub("pmc_vqa", pmc_vqa_dir))
    samples = task.load_samples()
    assert [s.target for s in samples] == ["B", "C"]
    assert samples[1].choices == ("CT", "Ultrasound", "MRI", "X-ray")
    assert samples[0].images == ()  # the hub copy has no image column: extract the figures to generate
