"""Data sources: local JSON/JSONL/CSV + images, MedMNIST npz, hub-format folders; the real data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medharness.core.errors import DataError
from medharness.taskfiles.task import load_task

TASK = """\
name: toy
version: "1"
description: toy
card: {licence: x, citation: y}
sources:
  - kind: local
    path: "{split}.%s"
    image_dir: images
  - kind: hf
    dataset: %s
    columns: {question: question, target: answer, derive_answer_type: true}
columns: {id: qid, image: image_name, meta: {answer_type: answer_type}}
prompts: {default: p, variants: {p: {user: "{question}"}}}
"""


def make_task(tmp_path: Path, ext: str = "json", hub: str = "none/none") -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(TASK % (ext, hub))
    return path


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (20, 10), (200, 0, 0)).save(root / "images" / "a.png")
    (root / "images" / "corrupt.jpg").write_bytes(b"not a jpeg")
    rows = [
        {"qid": 1, "question": "red?", "answer": "yes", "answer_type": "CLOSED", "image_name": "a.png"},
        {"qid": 2, "question": "x?", "answer": "lung", "answer_type": "OPEN", "image_name": "missing.png"},
        {"qid": 3, "question": "y?", "answer": "no", "answer_type": "CLOSED", "image_name": "corrupt.jpg"},
        {"qid": 4, "question": "z?", "answer": "no", "answer_type": "CLOSED",
         "image_name": "../../etc/passwd"},
    ]
    (root / "test.json").write_text(json.dumps({"data": rows}))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    header = "qid,question,answer,answer_type,image_name\n"
    (root / "test.csv").write_text(header + "".join(
        f"{r['qid']},{r['question']},{r['answer']},{r['answer_type']},{r['image_name']}\n" for r in rows))
    return root


@pytest.mark.parametrize("ext", ["json", "jsonl", "csv"])
def test_local_formats_give_the_same_samples(tmp_path: Path, data_dir: Path, ext: str) -> None:
    task = load_task(make_task(tmp_path, ext), {"data_dir": str(data_dir)})
    samples = task.load_samples()
    assert [s.id for s in samples] == ["1", "2", "3", "4"]
    assert samples[0].images == ("images/a.png",)
    assert samples[1].meta["answer_type"] == "OPEN"
    assert task.open_image(samples[0].images[0]).size == (20, 10)


def test_image_errors_name_the_problem(tmp_path: Path, data_dir: Path) -> None:
    task = load_task(make_task(tmp_path), {"data_dir": str(data_dir)})
    samples = task.load_samples()
    with pytest.raises(DataError, match="missing image 'images/missing.png'"):
        task.open_image(samples[1].images[0])
    with pytest.raises(DataError, match="corrupt image 'images/corrupt.jpg'"):
        task.open_image(samples[2].images[0])
    with pytest.raises(DataError, match="resolves outside the data root"):
        task.open_image(samples[3].images[0])


def test_data_dir_without_expected_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    task = load_task(make_task(tmp_path), {"data_dir": str(empty)})
    with pytest.raises(DataError, match=r"holds none of the expected files \(local test.json\)"):
        task.load_samples()


def test_hub_source_with_a_local_hub_format_folder(tmp_path: Path) -> None:
    """The real `datasets.load_dataset` path, on a folder in the hub's parquet layout (no network)."""
    datasets = pytest.importorskip("datasets")
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(buf, format="PNG")
    ds = datasets.Dataset.from_dict({
        "image": [{"bytes": buf.getvalue(), "path": None}] * 3,
        "question": ["is it green?", "what colour?", "is it red?"],
        "answer": ["yes", "green", "no"],
    }).cast_column("image", datasets.Image())
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    ds.to_parquet(str(hub / "test-00000-of-00001.parquet"))
    task = load_task(make_task(tmp_path, hub=str(hub.parent)))
    samples = task.load_samples()
    assert [s.id for s in samples] == ["0", "1", "2"]  # no id column: the row index
    assert [s.meta["answer_type"] for s in samples] == ["CLOSED", "OPEN", "CLOSED"]
    assert samples[0].meta["answer_type_derived"] is True
    assert samples[1].images == ("hf:test/1",)
    assert task.open_image("hf:test/1").getpixel((0, 0)) == (0, 255, 0)


def test_hub_source_offline_error_is_clear(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    task = load_task(make_task(tmp_path, hub="no-such-user/no-such-dataset"))
    with pytest.raises(DataError, match="could not load no-such-user/no-such-dataset .* pass --data-dir"):
        task.load_samples()


def test_npz_source(tmp_path: Path) -> None:
    root = tmp_path / "npz"
    root.mkdir()
    rng = np.random.default_rng(0)
    np.savez(root / "pneumoniamnist.npz", test_images=rng.integers(0, 255, (5, 28, 28), dtype=np.uint8),
             test_labels=np.array([[0], [1], [1], [0], [1]]))
    task = load_task("medmnist_pneumonia", {"data_dir": str(root), "check_sizes": False})
    samples = task.load_samples()
    assert [s.target for s in samples] == ["normal", "pneumonia", "pneumonia", "normal", "pneumonia"]
    assert samples[0].choices == ("normal", "pneumonia")
    assert task.open_image("npz:test/3").size == (28, 28)
    with pytest.raises(DataError, match="bad npz image reference"):
        task.open_image("npz:test/99")
    with pytest.raises(DataError, match="no 'train_labels'"):
        task.load_samples("train")


# --- the real data in ../shared/data -------------------------------------------------------------

def test_real_vqa_rad(vqa_rad_dir: Path) -> None:
    task = load_task("vqa_rad", {"data_dir": str(vqa_rad_dir)})
    samples = task.load_samples()
    assert len(samples) == 451
    assert Counter(s.meta["answer_type"] for s in samples) == {"CLOSED": 272, "OPEN": 179}
    assert Counter(s.meta["organ"] for s in samples) == {"CHEST": 174, "ABD": 158, "HEAD": 119}
    assert len({s.images[0] for s in samples}) == 203
    assert all(s.id.isdigit() for s in samples)
    assert task.open_image(samples[0].images[0]).mode == "RGB"


def test_real_slake_english(slake_dir: Path) -> None:
    task = load_task("slake", {"data_dir": str(slake_dir)})
    samples = task.load_samples()
    assert len(samples) == 1061
    assert Counter(s.meta["answer_type"] for s in samples) == {"OPEN": 645, "CLOSED": 416}
    assert len({s.images[0] for s in samples}) == 96
    zh = load_task("slake", {"data_dir": str(slake_dir), "filter": {"q_lang": "zh"}}).load_samples()
    assert len(zh) == 2094 - 1061


def test_real_pneumoniamnist(pneumonia_dir: Path) -> None:
    task = load_task("medmnist_pneumonia", {"data_dir": str(pneumonia_dir)})
    samples = task.load_samples()
    assert len(samples) == 624
    assert Counter(s.target for s in samples) == {"normal": 234, "pneumonia": 390}
    assert task.open_image(samples[0].images[0]).size == (28, 28)


def test_real_slake_chinese(slake_dir: Path) -> None:
    task = load_task("slake_zh", {"data_dir": str(slake_dir)})
    samples = task.load_samples()
    assert len(samples) == 1033 and task.load_report["expected"] == 1033
    assert Counter(s.meta["answer_type"] for s in samples) == {"OPEN": 613, "CLOSED": 420}
    assert all(s.meta["lang"] == "zh" for s in samples)
