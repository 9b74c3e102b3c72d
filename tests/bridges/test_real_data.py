"""The bridges on real VQA-RAD (../shared/data): the exported folders hold its samples, and a VLMEvalKit file
of it imports back to medharness's own score of the same texts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from shared_data import shared

from medharness.bridges.export import export_task
from medharness.bridges.importer import ImportRequest, import_predictions
from medharness.runs.rescore import score_predictions
from medharness.taskfiles.task import load_task

pytestmark = pytest.mark.shared_data
N = 40


def test_vqa_rad_through_vlmevalkit_files(tmp_path: Path) -> None:
    data = str(shared("vqa-rad-test"))
    export_task("vlmevalkit", "vqa_rad", tmp_path / "export", data_dir=data, limit=N)
    samples = load_task("vqa_rad", {"data_dir": data}).load_samples()[:N]
    table = pd.read_csv(tmp_path / "export" / "medharness_vqa_rad.tsv", sep="\t")
    assert len(table) == N and table["answer"].astype(str).tolist() == [str(s.target) for s in samples]
    table = table.drop(columns=["image"])
    # gold on even rows, another row's gold on odd rows, one blank: open and closed questions both appear
    answers = [str(samples[i].target if i % 2 == 0 else samples[(i + 7) % N].target) for i in range(N)]
    answers[3] = ""
    table["prediction"] = [a if a else math.nan for a in answers]
    file = tmp_path / "MyVLM_medharness_vqa_rad.tsv"
    table.to_csv(file, sep="\t", index=False)
    run = import_predictions(ImportRequest(tool="vlmevalkit", file=file, task="vqa_rad", data_dir=data,
                                           output=tmp_path / "run", id_map=tmp_path / "export" / "ids.tsv",
                                           allow_unmatched=True))
    preds = tmp_path / "expected.jsonl"
    preds.write_text("".join(json.dumps({"id": s.id, "prediction": a}) + "\n"
                             for s, a in zip(samples, answers)))
    expected, _ = score_predictions("vqa_rad", preds, data_dir=data, allow_partial=True)
    summary = run.log.tasks["vqa_rad"].summary
    assert summary is not None and summary.metrics == expected.metrics
    assert summary.groups == expected.groups
    origin = run.log.tasks["vqa_rad"].origin
    assert origin is not None and origin.n_matched == N and origin.n_task_samples == len(
        load_task("vqa_rad", {"data_dir": data}).load_samples())


def test_vqa_rad_lm_eval_export_holds_its_images(tmp_path: Path) -> None:
    data = str(shared("vqa-rad-test"))
    export_task("lm-eval", "vqa_rad", tmp_path / "lm", data_dir=data, limit=5)
    docs = [json.loads(line) for line in (tmp_path / "lm" / "docs.jsonl").read_text().splitlines()]
    task = load_task("vqa_rad", {"data_dir": data})
    for doc, sample in zip(docs, task.load_samples()[:5]):
        from PIL import Image

        exported = Image.open(tmp_path / "lm" / doc["images"][0])
        original = task.open_image(sample.images[0]).convert("RGB")
        assert exported.size == original.size and exported.tobytes() == original.tobytes()
