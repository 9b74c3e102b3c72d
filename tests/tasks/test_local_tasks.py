"""Tasks read from local copies: BCCD (VOC + CSV), HAM10000 (+ mask boxes), Heel, COVID severity, VQA-Med
2019.

Each loader runs on a small fixture written here in the real on-disk schema; the gold, written as a model
would answer in each prompt variant (and each box coordinate convention), must score 1.0.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import shared

from medharness.core.errors import DataError
from medharness.core.records import Generation, Sample
from medharness.scoring.boxes import from_absolute
from medharness.scoring.recipe import summarise
from medharness.taskfiles.sources.base import qwen_resized_size
from medharness.taskfiles.sources.detection import HAM_CLASSES, lesion_split, mask_box
from medharness.taskfiles.task import Task, load_task, recipe_for

R1 = "<think>I look at the image.</think>"
COORDS = {"plain": "absolute", "box": "absolute", "box_norm1000": "norm1000", "box_resized": "resized",
          "box_vrft": "resized"}  # box_vrft: VRFT-Aug App. A.5 word for word, in Qwen2.5-VL's own pixels


def write_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (180, 60, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def score(task: Task, sample: Sample, text: str, prompt: str) -> dict[str, float]:
    answer, scores = recipe_for(task, prompt=prompt).score(sample, Generation(sample_id=sample.id, text=text))
    assert answer.parsed, (prompt, text, answer.note)
    return scores


def box_text(sample: Sample, box: list[float], prompt: str) -> str:
    """The gold box as the variant asks for it: converted to its convention, JSON, in <answer> for r1 ones."""
    coords = COORDS[prompt]
    shown = from_absolute(box, coords, sample.meta.get("image_size"), sample.meta.get("resized_size"))
    body = json.dumps({"bbox_2d": [round(v, 6) for v in shown]})
    return body if prompt == "plain" else f"{R1}<answer>{body}</answer>"


def assert_box_variants(task: Task, sample: Sample, box: list[float], metrics: tuple[str, str]) -> None:
    variants = set(task.config.prompts.variants)
    assert set(COORDS) - {"box_vrft"} <= variants <= set(COORDS)  # box_vrft: the VRFT-Aug tasks only
    for prompt in sorted(variants):
        scores = score(task, sample, box_text(sample, box, prompt), prompt)
        assert math.isclose(scores[metrics[0]], 1.0, abs_tol=1e-6), (prompt, scores)
        assert scores[metrics[1]] == 1.0
        if prompt != "plain":
            assert scores["format_compliance"] == 1.0


def rendered(task: Task, sample: Sample, prompt: str) -> str:
    spec = load_task(task.path, {"data_dir": task.config.data_dir, "prompt": prompt, "check_sizes": False})
    parts = spec.render(sample, spec.settings()).messages[-1].content
    return next(p.text for p in parts if p.type == "text")


# --- BCCD: Pascal VOC and its CSV export ----------------------------------------------------------

VOC_BOXES = {
    "img_a": [("WBC", [10, 8, 40, 30]), ("RBC", [2, 3, 12, 13]), ("RBC", [50, 20, 62, 33])],
    "img_b": [("RBC", [5, 5, 20, 18]), ("Platelets", [30, 30, 36, 35])],
    "img_c": [("RBC", [1, 1, 9, 9])],  # in train only
}


def voc_xml(image_id: str, size: tuple[int, int], objects: list[tuple[str, list[int]]]) -> str:
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects)
    return (f"<annotation><folder>JPEGImages</folder><filename>{image_id}.jpg</filename><size>"
            f"<width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{objs}</annotation>")


@pytest.fixture()
def voc_dir(tmp_path: Path) -> Path:
    root = tmp_path / "bccd"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets").mkdir()
    for image_id, objects in VOC_BOXES.items():
        write_image(root / "JPEGImages" / f"{image_id}.jpg", (64, 48))
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, (64, 48), objects))
    (root / "ImageSets" / "test.txt").write_text("img_a\nimg_b\n")
    (root / "ImageSets" / "train.txt").write_text("img_c\n")
    # The repo's CSV export: every image, columns in the trap order xmin,xmax,ymin,ymax.
    lines = ["filename,cell_type,xmin,xmax,ymin,ymax"] + [
        f"{image_id}.jpg,{name},{b[0]},{b[2]},{b[1]},{b[3]}"
        for image_id, objects in VOC_BOXES.items() for name, b in objects]
    (root / "test.csv").write_text("\n".join(lines) + "\n")
    return root


def bccd(root: Path, source: int = 0, **overrides: object) -> Task:
    task = load_task("bccd_bbox", {"data_dir": str(root), "check_sizes": False})
    if source:
        task = load_task("bccd_bbox", {"data_dir": str(root), "check_sizes": False,
                                       "sources": [task.config.sources[source].model_dump()], **overrides})
    elif overrides:
        task = load_task("bccd_bbox", {"data_dir": str(root), "check_sizes": False, **overrides})
    return task


def test_voc_one_sample_per_image_and_cell_type(voc_dir: Path) -> None:
    task = bccd(voc_dir)
    samples = task.load_samples()
    assert [s.id for s in samples] == ["img_a/RBC", "img_a/WBC", "img_b/RBC", "img_b/Platelets"]
    rbc = samples[0]
    assert rbc.target == [[2, 3, 12, 13], [50, 20, 62, 33]]
    assert rbc.question == "Give the bounding box of one red blood cell in this blood smear image."
    assert rbc.images == ("JPEGImages/img_a.jpg",)
    assert rbc.meta["image_size"] == [64, 48] and rbc.meta["resized_size"] == qwen_resized_size(64, 48)
    assert rbc.meta["n_boxes"] == 2 and rbc.meta["label"] == "RBC"
    assert [s.id for s in task.load_samples("train")] == ["img_c/RBC"]
    assert task.open_image(rbc.images[0]).size == (64, 48)
    only_wbc = bccd(voc_dir, filter={"label": "WBC"}).load_samples()
    assert [s.id for s in only_wbc] == ["img_a/WBC"]


def test_voc_csv_reads_columns_by_name_not_position(voc_dir: Path) -> None:
    xml = bccd(voc_dir).load_samples()
    from_csv = bccd(voc_dir, source=1)
    assert from_csv.load_report == {} and from_csv.source.csv == "test.csv"
    samples = from_csv.load_samples()
    assert [(s.id, sorted(s.target), s.meta) for s in samples] == [(s.id, sorted(s.target), s.meta)
                                                                   for s in xml]
    # Reading the trap file by position would give reversed boxes: the loader says so instead of swapping.
    positional = from_csv.config.sources[0].model_dump()
    positional["csv_columns"] = {"image": "filename", "label": "cell_type", "x1": "xmin", "y1": "xmax",
                                 "x2": "ymin", "y2": "ymax"}
    bad = load_task("bccd_bbox", {"data_dir": str(voc_dir), "check_sizes": False, "sources": [positional]})
    with pytest.raises(DataError, match="reversed box"):
        bad.load_samples()


def test_voc_gold_scores_one_for_any_gold_box_in_every_convention(voc_dir: Path) -> None:
    task = bccd(voc_dir)
    rbc = task.load_samples()[0]
    for box in rbc.target:  # any red cell answers "one red blood cell"
        assert_box_variants(task, rbc, box, ("best_iou", "iou_acc_50"))
    wrong = score(task, rbc, "[30, 30, 36, 35]", "plain")
    assert wrong["best_iou"] == 0.0 and wrong["iou_acc_50"] == 0.0
    answer, scores = recipe_for(task).score(rbc, Generation(sample_id=rbc.id,
                                                            text="[2, 3, 12, 13] [50, 20, 62, 33]"))
    assert not answer.parsed and scores["best_iou"] == 0.0  # several boxes: unparsed, never a free pick
    assert "(644 x 476 pixels)" not in rendered(task, rbc, "box_resized")
    w, h = qwen_resized_size(64, 48)
    assert f"({w} x {h} pixels)" in rendered(task, rbc, "box_resized")
    assert "(64 x 48 pixels)" in rendered(task, rbc, "box")


def test_voc_errors_name_the_problem(voc_dir: Path) -> None:
    (voc_dir / "Annotations" / "img_b.xml").write_text(voc_xml("img_b", (64, 48),
                                                               [("Neutrophil", [1, 1, 5, 5])]))
    with pytest.raises(DataError, match=r"label\(s\) \['Neutrophil'\] not in"):
        bccd(voc_dir).load_samples()
    (voc_dir / "Annotations" / "img_b.xml").unlink()
    with pytest.raises(DataError, match="missing annotation"):
        bccd(voc_dir).load_samples()


def test_qwen_resized_size_matches_smart_resize() -> None:
    assert qwen_resized_size(640, 480) == [644, 476]
    assert qwen_resized_size(600, 450) == [588, 448]
    w, h = qwen_resized_size(4000, 3000)  # above max_pixels: scaled down, multiples of 28
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 16384 * 28 * 28
    assert qwen_resized_size(10, 10) == [56, 56]  # below min_pixels: scaled up


# --- HAM10000 ----------------------------------------------------------------------------------

HAM_ROWS = [  # lesion_id, image_id, dx: several images per lesion, as in the real metadata
    ("HAM_0000118", "ISIC_0027419", "bkl"), ("HAM_0000118", "ISIC_0025030", "bkl"),
    ("HAM_0002730", "ISIC_0026769", "bkl"), ("HAM_0002730", "ISIC_0025661", "bkl"),
    ("HAM_0001466", "ISIC_0031633", "nv"), ("HAM_0001466", "ISIC_0027850", "nv"),
    ("HAM_0002761", "ISIC_0029176", "mel"), ("HAM_0005132", "ISIC_0025837", "df"),
    ("HAM_0001396", "ISIC_0025276", "akiec"), ("HAM_0004234", "ISIC_0029396", "bcc"),
    ("HAM_0001601", "ISIC_0025915", "vasc"), ("HAM_0007207", "ISIC_0031326", "nv"),
] + [(f"HAM_{9000 + i:07d}", f"ISIC_{9000000 + i}", "nv") for i in range(40)]


def lesion_mask_box(index: int) -> list[int]:
    return [5 + index % 7, 4 + index % 5, 30 + index % 9, 22 + index % 4]


@pytest.fixture()
def ham_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ham"
    masks = root / "HAM10000_segmentations_lesion_tschandl"
    masks.mkdir(parents=True)
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i, (lesion, image, dx) in enumerate(HAM_ROWS):
        lines.append(f"{lesion},{image},{dx},histo,{40 + i}.0,male,back")
        part = "HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2"
        write_image(root / part / f"{image}.jpg", (40, 30))
        x1, y1, x2, y2 = lesion_mask_box(i)
        mask = np.zeros((30, 40), dtype=np.uint8)
        mask[y1:y2, x1:x2] = 255
        mask[0, 0] = 100  # below the 127 threshold: not lesion
        Image.fromarray(mask).save(masks / f"{image}_segmentation.png")
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_ham10000_labels_and_lesion_level_split(ham_dir: Path) -> None:
    by_split = {split: load_task("ham10000", {"data_dir": str(ham_dir), "split": split,
                                              "check_sizes": False}).load_samples()
                for split in ("train", "val", "test", "all")}
    assert len(by_split["all"]) == len(HAM_ROWS)
    parts = [s.id for split in ("train", "val", "test") for s in by_split[split]]
    assert sorted(parts) == sorted(s.id for s in by_split["all"])  # a partition of the images
    lesions = {split: {s.meta["lesion_id"] for s in by_split[split]} for split in ("train", "val", "test")}
    assert not (lesions["train"] & lesions["val"] or lesions["train"] & lesions["test"]
                or lesions["val"] & lesions["test"])  # no lesion in two splits
    assert all(by_split[s] for s in ("train", "test"))
    for s in by_split["all"]:
        assert s.meta["split"] == lesion_split(s.meta["lesion_id"], 0,
                                               {"train": 0.7, "val": 0.1, "test": 0.2})
    first = next(s for s in by_split["all"] if s.id == "ISIC_0027419")
    assert first.target == "benign keratosis-like lesions" and first.meta["dx"] == "bkl"
    assert first.choices == tuple(HAM_CLASSES.values())
    assert first.meta["localization"] == "back" and first.images[0].startswith("HAM10000_images_part_")


def test_lesion_split_fractions_are_honoured() -> None:
    counts = Counter(lesion_split(f"HAM_{i:07d}", 0, {"train": 0.7, "val": 0.1, "test": 0.2})
                     for i in range(20000))
    assert abs(counts["train"] / 20000 - 0.7) < 0.02 and abs(counts["test"] / 20000 - 0.2) < 0.02
    assert lesion_split("HAM_0000118", 0, {"a": 0.5, "b": 0.5}) == lesion_split("HAM_0000118", 0,
                                                                                {"a": 0.5, "b": 0.5})


def test_ham10000_gold_scores_one_in_every_prompt(ham_dir: Path) -> None:
    for prompt, text in (("plain", "{gold}"), ("names", R1 + " \\boxed{{{gold}}}"),
                         ("knowledge", R1 + " The answer is \\boxed{{{gold}}}.")):
        task = load_task("ham10000", {"data_dir": str(ham_dir), "split": "all", "prompt": prompt,
                                      "check_sizes": False})
        samples = task.load_samples()
        for sample in samples[:12]:
            assert score(task, sample, text.format(gold=sample.target), prompt)["label_accuracy"] == 1.0
    knowledge = load_task("ham10000", {"data_dir": str(ham_dir), "split": "all", "prompt": "knowledge",
                                      "check_sizes": False})
    text = knowledge.render(samples[0], knowledge.settings()).messages[-1].content[-1].text
    assert "melanocytic nevi: a small, symmetric" in text  # the knowledge file matches the class names


def test_ham10000_bbox_from_mask_edges(ham_dir: Path) -> None:
    task = load_task("ham10000_bbox", {"data_dir": str(ham_dir), "split": "all", "check_sizes": False})
    samples = {s.id: s for s in task.load_samples()}
    for i, (_, image, _) in enumerate(HAM_ROWS):
        assert samples[image].target == lesion_mask_box(i)
        assert samples[image].meta["image_size"] == [40, 30]
    sample = samples["ISIC_0027419"]
    assert_box_variants(task, sample, sample.target, ("iou", "iou_acc_50"))
    assert mask_box(ham_dir / "HAM10000_segmentations_lesion_tschandl" / "ISIC_0027419_segmentation.png") == (
        lesion_mask_box(0), (40, 30))
    empty = ham_dir / "HAM10000_segmentations_lesion_tschandl" / "ISIC_0025030_segmentation.png"
    Image.fromarray(np.zeros((30, 40), dtype=np.uint8)).save(empty)
    with pytest.raises(DataError, match="no pixel > 127"):
        load_task("ham10000_bbox", {"data_dir": str(ham_dir), "split": "all",
                                    "check_sizes": False}).load_samples()


def test_ham10000_missing_image_is_named(ham_dir: Path) -> None:
    next((ham_dir / "HAM10000_images_part_2").glob("ISIC_0027419.jpg")).unlink()
    with pytest.raises(DataError, match="no image ISIC_0027419.jpg"):
        load_task("ham10000", {"data_dir": str(ham_dir), "split": "all", "check_sizes": False}).load_samples()


# --- Heel (the user's own copy) --------------------------------------------------------------------


@pytest.fixture()
def heel_dir(tmp_path: Path) -> Path:
    root = tmp_path / "heel"
    rows = [("h1.png", "spur", 10, 20, 50, 60), ("h2.png", "normal", 5, 5, 25, 40),
            ("h3.png", "spur", 0, 0, 80, 70)]
    for image, *_ in rows:
        write_image(root / "images" / image, (80, 70))
    (root / "test.csv").write_text("image,label,x1,y1,x2,y2\n"
                                   + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return root


def test_heel_classification(heel_dir: Path) -> None:
    for prompt, text in (("plain", "{gold}"), ("names", R1 + "\\boxed{{{gold}}}")):
        task = load_task("heel", {"data_dir": str(heel_dir), "prompt": prompt})
        samples = task.load_samples()
        assert [s.target for s in samples] == ["spur", "normal", "spur"]
        assert samples[0].choices == ("normal", "spur") and samples[0].meta["class_name"] == "spur"
        assert samples[0].question == "Which category does this heel radiograph belong to?"
        for sample in samples:
            assert score(task, sample, text.format(gold=sample.target), prompt)["label_accuracy"] == 1.0


def test_heel_bbox(heel_dir: Path) -> None:
    task = load_task("heel_bbox", {"data_dir": str(heel_dir)})
    samples = task.load_samples()
    assert [s.target for s in samples] == [[10, 20, 50, 60], [5, 5, 25, 40], [0, 0, 80, 70]]
    assert samples[0].meta["image_size"] == [80, 70] and samples[0].meta["label"] == "spur"
    for sample in samples:
        assert_box_variants(task, sample, sample.target, ("iou", "iou_acc_50"))
    (heel_dir / "test.csv").write_text("image,label,x1,y1,x2,y2\nh1.png,spur,50,20,10,60\n")
    with pytest.raises(DataError, match="reversed box"):
        task.load_samples()


# --- COVID severity ---------------------------------------------------------------------------------


def test_covid_severity_grades(tmp_path: Path) -> None:
    root = tmp_path / "covid"
    grades = [0, 1, 2, 3, 4, 5, 6, 3]
    for i in range(len(grades)):
        write_image(root / "images" / f"cxr{i}.png", (32, 32))
    (root / "test.csv").write_text("image,grade\n" + "".join(f"cxr{i}.png,{g}\n"
                                                             for i, g in enumerate(grades)))
    for prompt, text in (("plain", "{gold}"), ("r1", R1 + " The grade is \\boxed{{{gold}}}.")):
        task = load_task("covid_severity", {"data_dir": str(root), "prompt": prompt})
        samples = task.load_samples()
        assert [int(s.target) for s in samples] == grades and samples[0].meta["grade"] == "0"
        recipe = recipe_for(task)
        rows = []
        from medharness.core.records import ResultRow

        for sample in samples:
            gen = Generation(sample_id=sample.id, text=text.format(gold=sample.target))
            answer, scores = recipe.score(sample, gen)
            assert scores["grade_accuracy"] == 1.0 and scores["mfrs"] == 1.0 and scores["grade_mae"] == 0.0
            rows.append(ResultRow.model_construct(sample=sample, generation=gen,
                                                  answer=answer, scores=scores))
        summary = summarise(rows, recipe, task.config.group_by, task.name, task.version,
                            task.config.cluster_by)
        assert summary.metrics["qwk"].value == pytest.approx(1.0)
    off = score(task, samples[0], R1 + "\\boxed{2}", "r1")
    assert off["mfrs"] == 0.0625 and off["grade_mae"] == 2.0


# --- VQA-Med 2019 (pipe-separated release) -----------------------------------------------------------

VQA_MED = [
    "synpic54082|modality|what modality is shown?|cta - ct angiography",
    "synpic32365|modality|is this a ct scan?|yes",
    "synpic36276|modality|is \tthis a t1 weighted image?|yes",
    "synpic21435|plane|in what plane is this ct scan?|axial",
    "synpic16333|organ|what organ system is displayed in this ct scan?|skull and contents",
    ("synpic54143|abnormality|what is the primary abnormality in this image?|anaplastic "
     "oligodendroglioma#multi-cystic complex mass"),
    ("synpic35171|abnormality|what is abnormal in the ct scan?|(angioinvasive aspergillosis with) septic "
     "cerebral emboli"),
    "synpic99999|abnormality|is this image normal?|no",
]


@pytest.fixture()
def vqa_med_dir(tmp_path: Path) -> Path:
    root = tmp_path / "VQAMed2019Test"
    for line in VQA_MED:
        write_image(root / "VQAMed2019_Test_Images" / f"{line.split('|')[0]}.jpg", (16, 16))
    (root / "VQAMed2019_Test_Questions_w_Ref_Answers.txt").write_text("\n".join(VQA_MED) + "\n")
    return root


def test_vqa_med_2019_reads_the_release(vqa_med_dir: Path) -> None:
    task = load_task("vqa_med_2019", {"data_dir": str(vqa_med_dir), "check_sizes": False})
    samples = task.load_samples()
    assert len(samples) == 8 and samples[0].id == "synpic54082"
    assert samples[0].images == ("VQAMed2019_Test_Images/synpic54082.jpg",)
    assert samples[2].question == "is \tthis a t1 weighted image?"
    assert Counter(s.meta["category"] for s in samples) == {"modality": 3, "plane": 1,
                                                            "organ": 1, "abnormality": 3}
    assert [s.meta["answer_type"] for s in samples[:2]] == ["OPEN", "CLOSED"]
    assert task.open_image(samples[0].images[0]).size == (16, 16)
    with pytest.raises(DataError, match="no 'train' split"):
        task.load_samples("train")  # never the test file under another name
    with pytest.raises(DataError, match="holds none of the expected files"):
        load_task("vqa_med_2019", {"data_dir": str(vqa_med_dir), "split": "train"}).load_samples()


def test_vqa_med_2019_references(vqa_med_dir: Path) -> None:
    task = load_task("vqa_med_2019", {"data_dir": str(vqa_med_dir), "check_sizes": False})
    samples = {s.id: s for s in task.load_samples()}
    for sample in samples.values():
        gold = sample.target.split("#")[0]
        for prompt, text in (("plain", gold), ("r1", f"{R1}<answer>{gold}</answer>")):
            assert score(task, sample, text, prompt)["reference_accuracy"] == 1.0
    alt, optional = samples["synpic54143"], samples["synpic35171"]
    assert score(task, alt, "Multi-cystic complex mass.", "plain")["reference_accuracy"] == 1.0
    assert score(task, optional, "septic cerebral emboli", "plain")["reference_accuracy"] == 1.0
    assert score(task, optional, "angioinvasive aspergillosis with septic cerebral emboli",
                 "plain")["reference_accuracy"] == 1.0
    partial = score(task, optional, "cerebral emboli", "plain")
    assert partial["reference_accuracy"] == 0.0 and partial["reference_token_f1"] == pytest.approx(0.8)
    assert score(task, samples["synpic99999"], "no, it is not", "plain")["reference_accuracy"] == 1.0


def test_delimited_local_files_keep_extra_separators(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "q.txt").write_text("a|q1|x|y\n\nb|q2|plain\n")
    task_file = tmp_path / "toy.yaml"
    task_file.write_text(
        'name: toy\nversion: "1"\ndescription: t\ncard: {licence: x, citation: y}\n'
        "sources:\n  - {kind: local, path: {test: q.txt}, format: psv, fieldnames: [id, question, answer]}\n"
        "columns: {id: id}\nprompts: {default: p, variants: {p: {user: '{question}'}}}\n")
    samples = load_task(task_file, {"data_dir": str(root)}).load_samples()
    assert [s.target for s in samples] == ["x|y", "plain"]
    (root / "q.txt").write_text("a|q1\n")
    with pytest.raises(DataError, match=r"q.txt:1: 2 field\(s\), expected 3"):
        load_task(task_file, {"data_dir": str(root)}).load_samples()


# --- the real BCCD data in ../shared/data ------------------------------------------------------------


def test_real_bccd() -> None:
    root = shared("bccd-detection")
    task = load_task("bccd_bbox", {"data_dir": str(root)})
    samples = task.load_samples()
    assert task.load_report["actual"] == task.load_report["expected"] == 176
    assert len({s.meta["image_id"] for s in samples}) == 72
    boxes = Counter()
    for s in samples:
        boxes[s.meta["label"]] += len(s.target)
    assert boxes == {"RBC": 805, "WBC": 71, "Platelets": 69} and sum(boxes.values()) == 945
    assert all(s.meta["image_size"] == [640, 480] and s.meta["resized_size"] == [644, 476] for s in samples)
    assert task.open_image(samples[0].images[0]).size == (640, 480)
    # The CSV export (all 364 images, columns xmin,xmax,ymin,ymax) gives the XML's boxes for the 72 test
    # images.
    from_csv = load_task("bccd_bbox",
                         {"data_dir": str(root), "sources": [task.config.sources[1].model_dump()]})
    csv_samples = from_csv.load_samples()
    assert from_csv.load_report["source"] == "voc test.csv [test]"
    assert [(s.id, sorted(s.target)) for s in csv_samples] == [(s.id, sorted(s.target)) for s in samples]
    for sample in samples[:6]:
        assert_box_variants(task, sample, sample.target[-1], ("best_iou", "iou_acc_50"))
