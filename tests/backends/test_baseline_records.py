"""Baselines read only the train split / prior and per-sample type and options; records round-trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medharness.backends.base import Request
from medharness.backends.baseline import BaselineBackend
from medharness.core.errors import BackendError
from medharness.core.records import Generation, Prompt, ResultRow, Sample
from medharness.taskfiles.task import load_task

TASK = """\
name: toy
version: "1"
description: toy
card: {licence: x, citation: y, prior: {CLOSED: "no", OPEN: "liver"}}
sources: [{kind: local, path: "{split}.jsonl"}]
columns: {id: qid, meta: {answer_type: t}}
prompts: {default: p, variants: {p: {user: "{question}"}}}
"""


def toy(tmp_path: Path, with_train: bool) -> tuple:
    (tmp_path / "toy.yaml").write_text(TASK)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    test = [{"qid": i, "question": "q", "answer": "yes", "t": t} for i, t in enumerate(["CLOSED", "OPEN"])]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    if with_train:
        train = [("yes", "CLOSED"), ("yes", "CLOSED"), ("no", "CLOSED"), ("lung", "OPEN"), ("Lung", "OPEN"),
                 ("heart", "OPEN")]
        (data / "train.jsonl").write_text("".join(
            json.dumps({"qid": i, "question": "q", "answer": a, "t": t}) + "\n"
            for i, (a, t) in enumerate(train)))
    task = load_task(tmp_path / "toy.yaml", {"data_dir": str(data)})
    return task, task.load_samples()


def answers(backend: BaselineBackend, samples: list[Sample]) -> list[str]:
    reqs = [Request(prompt=Prompt(sample_id=s.id, messages=())) for s in samples]
    return [g.text for g in backend.generate(reqs)]


def test_majority_per_answer_type_from_train(tmp_path: Path) -> None:
    task, samples = toy(tmp_path, with_train=True)
    backend = BaselineBackend("majority")
    backend.prepare(task, samples)
    assert answers(backend, samples) == ["yes", "lung"]  # "lung"/"Lung" counted together


def test_majority_falls_back_to_the_card_prior(tmp_path: Path) -> None:
    task, samples = toy(tmp_path, with_train=False)
    backend = BaselineBackend("majority")
    backend.prepare(task, samples)
    assert answers(backend, samples) == ["no", "liver"]


def test_random_is_seeded_and_draws_from_train_answers_of_the_type(tmp_path: Path) -> None:
    task, samples = toy(tmp_path, with_train=True)
    draws = []
    for seed in (1, 1, 2):
        backend = BaselineBackend("random", seed=seed)
        backend.prepare(task, samples * 20)
        draws.append(answers(backend, samples * 20))
    assert draws[0] == draws[1] and draws[0] != draws[2]
    assert set(draws[0][0::2]) == {"yes", "no"} and set(draws[0][1::2]) <= {"lung", "Lung", "heart"}


def test_constant_and_bad_specs() -> None:
    assert BaselineBackend("constant:no").fingerprint == "baseline:constant:no"
    with pytest.raises(BackendError, match="needs the text"):
        BaselineBackend("constant")
    with pytest.raises(BackendError, match="unknown baseline 'median'"):
        BaselineBackend("median")


def test_result_row_round_trips_with_nan_scores() -> None:
    row = ResultRow(task="t", task_version="1", prompt_hash="abc",
                    sample=Sample(id="1", task="t", question="q", target=[1.0, 2.0, 3.0, 4.0],
                                  images=("a.png",)),
                    generation=Generation(sample_id="1", text="x"), answer={"value": None, "note": "n"},
                    scores={"iou": 0.0, "judge": math.nan})
    back = ResultRow.model_validate_json(row.model_dump_json())
    assert back.sample == row.sample and back.answer == row.answer
    assert back.scores["iou"] == 0.0 and math.isnan(back.scores["judge"])
    assert '"judge":null' in row.model_dump_json()


def test_prompt_hash_depends_on_content_not_sample_id() -> None:
    a = Prompt(sample_id="1", messages=())
    assert a.hash == Prompt(sample_id="2", messages=()).hash
    assert a.hash != Prompt(sample_id="1", messages=(), settings={"max_new_tokens": 3}).hash


def test_make_tiny_model_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    from medharness.cli import main

    assert main(["make-tiny-model", str(tmp_path / "m"), "--arch", "qwen2_5_vl"]) == 0
    assert "built a tiny qwen2_5_vl" in capsys.readouterr().out
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert (tmp_path / "m" / "tokenizer.json").exists()


def test_majority_of_box_targets_is_the_mean_box() -> None:
    from medharness.backends.baseline import _majority

    assert _majority([[0, 0, 10, 10], [10, 10, 20, 30]]) == [5.0, 5.0, 15.0, 20.0]
    # a list of boxes per sample (e.g. every RBC of an image), four boxes each: not mistaken for one box
    many = [[[0, 0, 2, 2]] * 4, [[2, 2, 4, 4]] * 4]
    assert _majority(many) == [1.0, 1.0, 3.0, 3.0]
    assert _majority(["yes", "no", "Yes"]) == "yes"
