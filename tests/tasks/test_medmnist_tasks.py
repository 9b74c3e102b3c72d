"""The MedMNIST task family: fixture .npz files in the real MedMNIST layout, every prompt variant, scoring,
cards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from medharness.cli_output import validate_files
from medharness.core.errors import DataError
from medharness.core.records import Generation, Sample
from medharness.scoring.knowledge import read_knowledge
from medharness.taskfiles.task import TASKS_DIR, Task, load_task, recipe_for, resolve_task_names


@dataclass(frozen=True)
class Spec:
    file: str  # MedMNIST file stem: <file>.npz, <file>_64.npz, ...
    classes: tuple[str, ...]  # MedMNIST label order
    test_size: int  # the real test split (docs/conventions.md, dataset facts)
    rgb: bool  # MedMNIST n_channels == 3
    ordinal: bool = False


SPECS = {
    "medmnist_breast": Spec("breastmnist", ("malignant", "normal or benign"), 156, rgb=False),
    "medmnist_pneumonia": Spec("pneumoniamnist", ("normal", "pneumonia"), 624, rgb=False),
    "medmnist_oct": Spec("octmnist", ("choroidal neovascularization", "diabetic macular edema", "drusen",
                                      "normal"),
                         1000, rgb=False),
    "medmnist_retina": Spec("retinamnist", ("grade 0", "grade 1", "grade 2", "grade 3", "grade 4"), 400,
                            rgb=True, ordinal=True),
    "medmnist_derma": Spec("dermamnist", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
        "vascular lesions"), 2005, rgb=True),
    "medmnist_tissue": Spec("tissuemnist", (
        "collecting duct or connecting tubule", "distal convoluted tubule", "glomerular endothelial cells",
        "interstitial endothelial cells", "leukocytes", "podocytes", "proximal tubule segments",
        "thick ascending limb"), 47280, rgb=False),
    "medmnist_blood": Spec("bloodmnist", (
        "basophil", "eosinophil", "erythroblast", "immature granulocyte", "lymphocyte", "monocyte",
        "neutrophil", "platelet"), 3421, rgb=True),
    "medmnist_organa": Spec("organamnist", (
        "bladder", "left femur", "right femur", "heart", "left kidney", "right kidney", "liver", "left lung",
        "right lung", "pancreas", "spleen"), 17778, rgb=False),
}
TASKS = sorted(SPECS)
# Which of the four candidate files each fixture writes (so every candidate name is exercised somewhere).
SUFFIXES = ("_224", "_128", "_64", "")
VARIANTS = ("plain", "names", "knowledge")


def labels_for(spec: Spec) -> list[int]:
    """Every class at least once, then a few repeats: N = classes + 3."""
    n = len(spec.classes)
    return [*range(n), 0, n - 1, n // 2]


def write_npz(root: Path, spec: Spec, suffix: str, size: int = 28) -> Path:
    """A small .npz in the real MedMNIST layout: uint8 images (N,H,W) or (N,H,W,3), labels (N,1), three
    splits."""
    rng = np.random.default_rng(len(spec.classes))
    arrays = {}
    for split, labels in (("train", [0, 1]), ("val", [1]), ("test", labels_for(spec))):
        shape = (len(labels), size, size, 3) if spec.rgb else (len(labels), size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.uint8).reshape(-1, 1)
    path = root / f"{spec.file}{suffix}.npz"
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(params=TASKS)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Spec, Path]:
    name = request.param
    spec = SPECS[name]
    suffix = SUFFIXES[TASKS.index(name) % len(SUFFIXES)]
    write_npz(tmp_path, spec, suffix, size={"_224": 224, "_128": 128, "_64": 64, "": 28}[suffix])
    return name, spec, tmp_path


def load(name: str, root: Path, **overrides: object) -> Task:
    return load_task(name, {"data_dir": str(root), "check_sizes": False, **overrides})


def gold_text(spec: Spec, sample: Sample) -> str:
    return spec.classes[sample.meta["label"]]


def wrong_text(spec: Spec, sample: Sample) -> str:
    return spec.classes[(sample.meta["label"] + 1) % len(spec.classes)]


def boxed(answer: str) -> str:
    return f"<think>The image shows the typical features.</think> \\boxed{{{answer}}}"


# --- the task files --------------------------------------------------------------------------


def test_task_files_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_files([TASKS_DIR / f"{name}.yaml" for name in TASKS]) == 0
    assert "8 valid, 0 invalid" in capsys.readouterr().out


def test_family_selects_every_medmnist_task() -> None:
    assert sorted(map(str, resolve_task_names("medmnist"))) == TASKS


@pytest.mark.parametrize("name", TASKS)
def test_task_config(name: str) -> None:
    spec = SPECS[name]
    config = load_task(name).config
    assert config.family == "medmnist"
    assert config.card.sizes == {"test": spec.test_size}
    assert config.card.licence == ("CC-BY-NC-4.0" if name == "medmnist_derma" else "CC-BY-4.0")
    assert "MedMNIST v2" in config.card.citation
    (source,) = config.sources
    assert source.kind == "npz"
    assert source.candidates == [f"{spec.file}{s}.npz" for s in SUFFIXES]
    assert tuple(source.classes) == spec.classes
    assert source.ordinal == spec.ordinal
    assert set(config.prompts.variants) == set(VARIANTS)
    assert config.prompts.variants["knowledge"].knowledge == f"knowledge/{name}.txt"
    assert config.group_by == ["class_name"]


@pytest.mark.parametrize("name", TASKS)
def test_knowledge_file_covers_exactly_the_classes(name: str) -> None:
    path = TASKS_DIR / "knowledge" / f"{name}.txt"
    knowledge = read_knowledge(path)
    assert sorted(knowledge) == sorted(SPECS[name].classes)  # every class, nothing else
    if SPECS[name].ordinal:  # the integer parser must find only the grade the model writes
        assert not any(ch.isdigit() for text in knowledge.values() for ch in text)
    assert all(len(text.split()) >= 8 for text in knowledge.values())
    header = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert any("clinician review" in line for line in header)


def test_ham10000_knowledge_matches_dermamnist() -> None:
    ham = read_knowledge(TASKS_DIR / "knowledge" / "ham10000.txt")
    assert ham == read_knowledge(TASKS_DIR / "knowledge" / "medmnist_derma.txt")
    assert list(ham) == list(SPECS["medmnist_derma"].classes)


def test_knowledge_prompt_uses_the_pa_p_wording() -> None:
    for name in TASKS:
        user = load_task(name).config.prompts.variants["knowledge"].user
        assert user.startswith("This is a") and " image of " in user.split(".")[0]
        assert "Categories and their typical descriptions are as follows:" in user  # VRFT-Aug App. A.5
        assert "MUST BE enclosed within <think> </think> tags" in user and "\\boxed{{...}}" in user


# --- loading the fixture npz -----------------------------------------------------------------


def test_samples_targets_and_images(case: tuple[str, Spec, Path]) -> None:
    name, spec, root = case
    task = load(name, root)
    samples = task.load_samples()
    labels = labels_for(spec)
    assert len(samples) == len(labels)
    expected = labels if spec.ordinal else [spec.classes[i] for i in labels]
    assert [s.target for s in samples] == expected
    assert [s.meta["class_name"] for s in samples] == [spec.classes[i] for i in labels]
    assert all(s.choices == spec.classes for s in samples)
    image = task.open_image(samples[0].images[0])
    assert image.mode == "RGB"
    assert image.size[0] == image.size[1] == samples[0].meta["image_size"][0]


def test_first_candidate_file_wins(tmp_path: Path) -> None:
    spec = SPECS["medmnist_blood"]
    write_npz(tmp_path, spec, "", size=28)
    write_npz(tmp_path, spec, "_224", size=224)
    task = load("medmnist_blood", tmp_path)
    samples = task.load_samples()
    assert task.open_image(samples[0].images[0]).size == (224, 224)
    assert "bloodmnist_224.npz" in task.load_report["source"]


def test_card_size_check(case: tuple[str, Spec, Path]) -> None:
    name, spec, root = case
    n = len(labels_for(spec))
    with pytest.raises(DataError, match=f"the card expects {spec.test_size} test samples, .* gave {n}"):
        load_task(name, {"data_dir": str(root)}).load_samples()
    task = load(name, root)
    task.load_samples()
    assert task.load_report["expected"] == spec.test_size
    assert task.load_report["actual"] == n
    assert task.load_report["split"] == "test"


def test_card_size_passes_at_full_size(tmp_path: Path) -> None:
    spec = SPECS["medmnist_breast"]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "breastmnist.npz",
             test_images=rng.integers(0, 256, (156, 28, 28), dtype=np.uint8),
             test_labels=(np.arange(156) % 4 != 0).astype(np.uint8).reshape(-1, 1))
    task = load_task("medmnist_breast", {"data_dir": str(tmp_path)})
    samples = task.load_samples()
    assert task.load_report == {"split": "test", "source": task.load_report["source"],
                                "expected": 156, "actual": 156}
    assert sum(s.target == "malignant" for s in samples) == 39
    assert spec.classes[1] == "normal or benign"


# --- prompts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders(case: tuple[str, Spec, Path], variant: str) -> None:
    name, spec, root = case
    task = load(name, root, prompt=variant)
    sample = task.load_samples()[0]
    prompt = task.render(sample, task.settings())
    parts = prompt.messages[-1].content
    assert [p.type for p in parts] == ["image", "text"]
    text = parts[-1].text
    bare = text.replace("\\boxed{}", "").replace("\\boxed{...}", "")  # knowledge: App. A.5's `\boxed{...}`
    assert "{" not in bare and "}" not in bare
    if variant == "plain":
        assert "only" in text
        if not spec.ordinal:
            assert ", ".join(spec.classes) in text
    else:
        assert "<think> </think>" in text and ("\\boxed{}" in text or "\\boxed{...}" in text)
    if variant == "names":
        assert ", ".join(spec.classes) in text
    if variant == "knowledge":
        knowledge = read_knowledge(TASKS_DIR / "knowledge" / f"{name}.txt")
        block = "\n".join(f"{c}: {knowledge[c]}" for c in spec.classes)
        assert f"\n{block}.\n" in text  # every class with its attributes, one per line, in label order
        for cls in spec.classes:
            assert f"{cls}: {knowledge[cls]}" in text


# --- scoring ---------------------------------------------------------------------------------


def main_metric(spec: Spec) -> str:
    return "grade_accuracy" if spec.ordinal else "label_accuracy"


def answers(spec: Spec, sample: Sample, variant: str, wrong: bool = False) -> list[str]:
    cls = wrong_text(spec, sample) if wrong else gold_text(spec, sample)
    if variant == "plain":
        out = [cls, f"{cls}.", f"Answer: {cls}"]
        if spec.ordinal:
            out.append(cls.split()[-1])  # the bare grade
        return out
    out = [boxed(cls), f"{boxed(cls)}<|im_end|>", boxed(f"\\text{{{cls}}}")]
    if spec.ordinal:
        out.append(boxed(cls.split()[-1]))
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_gold_scores_one_and_wrong_scores_zero(case: tuple[str, Spec, Path], variant: str) -> None:
    name, spec, root = case
    task = load(name, root)
    recipe = recipe_for(task, prompt=variant)
    metric = main_metric(spec)
    assert metric in [m.label for m in recipe.metrics]
    for sample in task.load_samples():
        for text in answers(spec, sample, variant):
            answer, scores = recipe.score(sample, Generation(sample_id=sample.id, text=text))
            assert answer.parsed, (text, answer.note)
            assert scores[metric] == 1.0, text
            if spec.ordinal:
                assert answer.value == sample.target
                assert scores["mfrs"] == 1.0 and scores["grade_mae"] == 0.0
            if variant != "plain":
                assert scores["format_compliance"] == 1.0
        for text in answers(spec, sample, variant, wrong=True):
            answer, scores = recipe.score(sample, Generation(sample_id=sample.id, text=text))
            assert answer.parsed, (text, answer.note)
            assert scores[metric] == 0.0, text
            if spec.ordinal:
                assert scores["mfrs"] < 1.0 and scores["grade_mae"] >= 1.0


@pytest.mark.parametrize("variant", ("names", "knowledge"))
def test_format_and_unparsed_answers(case: tuple[str, Spec, Path], variant: str) -> None:
    name, spec, root = case
    task = load(name, root)
    recipe = recipe_for(task, prompt=variant)
    sample = task.load_samples()[0]
    cls = gold_text(spec, sample)
    # right class without <think>: correct but not format-compliant
    answer, scores = recipe.score(sample, Generation(sample_id=sample.id, text=f"\\boxed{{{cls}}}"))
    assert scores[main_metric(spec)] == 1.0 and scores["format_compliance"] == 0.0
    # no box, or two classes in the box: unparsed, zero credit
    other = wrong_text(spec, sample)
    for text in (f"<think>x</think> {cls}", boxed(f"{cls} or {other}")):
        answer, scores = recipe.score(sample, Generation(sample_id=sample.id, text=text))
        assert not answer.parsed, text
        assert scores[main_metric(spec)] == 0.0


def test_retina_grades_score_near_misses(tmp_path: Path) -> None:
    spec = SPECS["medmnist_retina"]
    write_npz(tmp_path, spec, "")
    task = load("medmnist_retina", tmp_path)
    recipe = recipe_for(task, prompt="knowledge")
    sample = next(s for s in task.load_samples() if s.target == 2)
    expected = {"grade 2": 1.0, "grade 3": 0.25, "grade 1": 0.25, "grade 4": 0.0625, "grade 0": 0.0625}
    for text, credit in expected.items():
        _, scores = recipe.score(sample, Generation(sample_id=sample.id, text=boxed(text)))
        assert scores["mfrs"] == credit
        assert scores["grade_mae"] == abs(int(text[-1]) - 2)


def test_default_convention_and_group_by(case: tuple[str, Spec, Path]) -> None:
    name, spec, root = case
    task = load(name, root)
    assert task.prompt_name == "names"
    recipe = recipe_for(task)
    labels = [m.label for m in recipe.metrics]
    if spec.ordinal:
        assert labels[:4] == ["grade_accuracy", "mfrs", "grade_mae", "qwk"]
    else:
        assert labels[0] == "label_accuracy"
    assert recipe.parser.name.startswith("boxed+")
