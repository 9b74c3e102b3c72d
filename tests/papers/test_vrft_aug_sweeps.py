"""Tiny profiles of the shipped VRFT-Aug sweeps, end to end with the real `medharness train` and `run`: each
shipped file keeps its recipes, options, prompts, eval mapping, table and reference board; the profile swaps
in a tiny random-weight Qwen2.5-VL, tasks with data on this machine (the real PneumoniaMNIST in
../shared/data, the offline phantom tasks), 2 steps a cell (`tiny_cpu`) and 4 evaluation samples. Table
columns whose task the profile drops are blank. PA_pi's embedded analogue: GRPO on `phantom_box`, then
zero-shot `phantom_presence` / `phantom_side`, whose run logs name the stage-1 checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from medharness.cli import main

SWEEPS = Path(__file__).resolve().parents[2] / "trainers" / "sweeps"
PNEUMONIA = Path(__file__).resolve().parents[3] / "shared" / "data" / "pneumoniamnist"


def tiny_profile(name: str, out: Path, model: Path, tasks: dict[str, str | None], prompts: dict[str, str],
                 data_dir: Path | None = None) -> Path:
    """The shipped sweep `name` with the tiny settings; `tasks` maps its tasks to the profile's (None:
    dropped), `prompts` maps prompt variants the profile's tasks lack to ones they have."""
    data: dict[str, Any] = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())

    def task_list(items: list[str]) -> list[str]:
        return list(dict.fromkeys(t for t in (tasks.get(i, i) for i in items) if t))

    def prompt(value: Any) -> Any:
        if isinstance(value, dict):
            return {tasks.get(k, k): prompts.get(v, v) for k, v in value.items() if tasks.get(k, k)}
        return prompts.get(value, value) if value else value

    data.update(model=str(model), tasks=task_list(data["tasks"]), seeds=[0], max_steps=2,
                common_presets=["tiny_cpu"],
                eval={"limit": 4, "batch_size": 4, "backend": "hf", "backend_options": {"device": "cpu"},
                      "max_new_tokens": 8})
    data.update({k: prompt(data[k]) for k in ("prompt", "eval_prompt") if k in data})
    if data.get("shots"):  # the first shots value only, at 4 per class; the table keeps its rows
        first = data["shots"][0]
        data["shots"] = [first if first == "all" else 4]
        rows = data["table"]["rows"]
        rows[:] = [r for r in rows if r.get("shots") in (None, first)]
        for row in rows:
            if row.get("shots") is not None:
                row["shots"] = data["shots"][0]
        whole = data.get("whole_split", {})  # the first shots value's exceptions, on the profile's tasks
        data["whole_split"] = {tasks.get(t, t): list(data["shots"]) for t, ks in whole.items()
                               if tasks.get(t, t) and first in ks}
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    if isinstance(data.get("eval_tasks"), dict):  # two tasks mapped onto one: their eval tasks merge
        merged: dict[str, list[str]] = {}
        for key, value in data["eval_tasks"].items():
            if tasks.get(key, key):
                merged[str(tasks.get(key, key))] = task_list([*merged.get(str(tasks.get(key, key)), []),
                                                              *value])
        data["eval_tasks"] = merged
    tiny = ("trl.max_steps", "trl.per_device_train_batch_size", "trl.gradient_accumulation_steps",
            "trl.learning_rate")  # the entries' own schedule (V-SFT's: the paper's) gives way to tiny_cpu's
    for entry in data["recipes"]:
        entry["overrides"] = [o for o in entry.get("overrides", []) if o.partition("=")[0] not in tiny]
        entry["overrides"].append("samples.limit=4")
        entry.update({k: prompt(entry[k]) for k in ("prompt", "eval_prompt") if k in entry})
        if "tasks" in entry:
            entry["tasks"] = task_list(entry["tasks"])
    kept = {tasks.get(t, t) for t in (*data["tasks"],
                                      *(t for e in data["recipes"] for t in e.get("tasks", [])))}
    for col in data["table"]["columns"]:
        col["task"] = tasks.get(col.get("task"), col.get("task"))
    for row in data["table"]["rows"]:
        dropped = [c["label"] for c in data["table"]["columns"] if "task" in c and
                   (c["task"] is None or c["task"] not in _evaluated(data, row, kept))]
        row["blank"] = sorted(set(row.get("blank", [])) | set(dropped))
    file = out / f"{name}.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    return file


def _evaluated(data: dict[str, Any], row: dict[str, Any], kept: set[str]) -> set[str]:
    """The eval tasks of a table row in the profile."""
    mapping = data.get("eval_tasks") if isinstance(data.get("eval_tasks"), dict) else {}
    if "entry" not in row:
        return {t for task in kept for t in mapping.get(task, [task])}
    entry = next(e for e in data["recipes"] if e.get("id", e["recipe"]) == row["entry"])
    return {t for task in entry.get("tasks", data["tasks"]) for t in mapping.get(task, [task])}


def run_profile(file: Path, out: Path) -> dict[str, Any]:
    assert main(["train-then-eval", "--sweep", str(file), "--dry-run"]) == 0
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out)]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert not record["failed"] and all(c["finished"] for c in record["cells"])
    return record


def measured(record: dict[str, Any], label: str) -> dict[str, Any]:
    """A measured row of the paper table (sweep.json's `table`: the board's cells): column -> cell."""
    return {c["column"]: c for c in record["table"]["cells"] if c["row"] == label and c["kind"] == "run"}


needs_pneumonia = pytest.mark.skipif(not PNEUMONIA.is_dir(), reason="../shared/data/pneumoniamnist is absent")


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("trl")
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.slow
def test_figure3_pa_pi_on_phantoms(env: Path, tiny_models: dict[str, Path]) -> None:
    """Stage 1: vrft_aug + vrft_aug_loc on phantom_box (IoU > 0.5 and the strict box format); stage 2:
    zero-shot phantom_presence and phantom_side, whose lineage names the stage-1 checkpoint."""
    file = tiny_profile("vrft_aug_figure3", env, tiny_models["qwen2_5_vl"],
                        {"ham10000": "phantom_presence", "heel": "phantom_side",
                         "ham10000_bbox": "phantom_box", "heel_bbox": "phantom_box"},
                        {"names": "r1", "box_resized": "r1"})
    data = yaml.safe_load(file.read_text())
    data["prompt"] = {"phantom_presence": "r1"}  # phantom_side has no thinking variant: evaluated as it is
    data["recipes"][0]["tasks"] = ["phantom_presence"]  # V-RFT trains where a thinking variant exists
    data["recipes"][1].update(prompt={"phantom_box": "r1"}, eval_prompt={"phantom_presence": "r1"})
    data["table"]["rows"][1]["blank"] = ["Heel"]
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    out = env / "fig3"
    record = run_profile(file, out)
    stage1 = out / "cells" / next(c["id"] for c in record["cells"] if c["entry"] == "pa_pi")
    train = json.loads((stage1 / "train" / "train.json").read_text())
    assert [(r["label"], r["metric"], r["args"]) for r in train["rewards"]] == [
        ("iou_gt_50", "iou_accuracy", {"threshold": 0.5, "strict": True}),
        ("format_strict", "format_compliance", {"format": "think_answer_box"})]
    manifest = json.loads((stage1 / "train" / "final" / "medharness.json").read_text())
    assert manifest["recipe"] == "vrft_aug" and manifest["preset"] == "vrft_aug_paper+vrft_aug_loc+tiny_cpu"
    assert manifest["batch"]["completions_per_step"] == 2 and manifest["batch"]["prompts_per_step"] == 1
    assert manifest["config"]["options"]["paper_batch"]["counts"] == "prompts"
    for task in ("phantom_presence", "phantom_side"):
        run = json.loads((stage1 / "eval" / task / "run.json").read_text())
        assert run["trained_from"]["checkpoint"] == str((stage1 / "train" / "final").resolve())
        assert run["trained_from"]["recipe"] == "vrft_aug" and run["trained_from"]["task"] == "phantom_box"
    values = measured(record, "V-RFT + PA_pi")
    assert values["HAM10000"]["value"] is not None and values["Heel"]["value"] is not None
    board = (out / "leaderboard.md").read_text()
    assert "V-RFT + PA_pi · published" in board and "55.92" in board and "Figure 3" in board


@pytest.mark.slow
def test_table3_mfrs_against_accuracy(env: Path, tiny_models: dict[str, Path]) -> None:
    file = tiny_profile("vrft_aug_table3", env, tiny_models["qwen2_5_vl"],
                        {"medmnist_retina": "phantom_size", "covid_severity": None},
                        {"names": "r1", "knowledge": "r1"})
    out = env / "t3"
    record = run_profile(file, out)
    rewards = {c["id"]: json.loads((out / "cells" / c["id"] / "train" / "train.json")
                                   .read_text())["rewards"][0]
               for c in record["cells"] if c["recipe"] == "vrft_aug"}
    assert {cid.split("-phantom")[0]: r["metric"] for cid, r in rewards.items()} == {
        "v-rft": "mfrs", "pa_p-acc": "grade_accuracy", "pa_p-mfrs": "mfrs"}
    assert measured(record, "V-RFT + PA_P + R_MFRS")["Retina"]["value"] is not None
    assert measured(record, "V-RFT")["COVID-19"]["value"] is None  # dropped by the profile: n/a


@needs_pneumonia
@pytest.mark.slow
def test_table1_on_real_pneumoniamnist(env: Path, tiny_models: dict[str, Path]) -> None:
    file = tiny_profile("vrft_aug_table1", env, tiny_models["qwen2_5_vl"],
                        {t: None for t in ("medmnist_breast", "medmnist_oct", "medmnist_retina",
                                           "medmnist_derma", "medmnist_tissue", "medmnist_blood",
                                           "medmnist_organa")},
                        {}, PNEUMONIA)
    out = env / "t1"
    record = run_profile(file, out)
    assert [c["id"] for c in record["cells"]] == [f"{e}-medmnist_pneumonia-k4-s0" for e in
                                                  ("v-sft", "v-rft", "v-rft-pa_p")]
    for label in ("Qwen2.5VL-3B · zero-shot", "V-SFT · k=10", "V-RFT · k=10", "V-RFT + PA_P · k=10"):
        assert measured(record, label)["Pneumonia"]["n_runs"] == 1
    prompts = [json.loads((out / "cells" / f"{e}-medmnist_pneumonia-k4-s0" / "train" / "train.json")
                          .read_text())["prompt"] for e in ("v-rft", "v-rft-pa_p")]
    assert prompts == ["names", "knowledge"]


@needs_pneumonia
@pytest.mark.slow
def test_table2_recitation_on_real_pneumoniamnist(env: Path, tiny_models: dict[str, Path]) -> None:
    file = tiny_profile("vrft_aug_table2", env, tiny_models["qwen2_5_vl"],
                        {t: None for t in ("medmnist_breast", "medmnist_oct", "medmnist_retina",
                                           "medmnist_derma", "medmnist_tissue", "medmnist_blood",
                                           "medmnist_organa")},
                        {}, PNEUMONIA)
    out = env / "t2"
    record = run_profile(file, out)
    for entry, delta in (("recite-plus", 0.2), ("recite-minus", -2)):
        cell = out / "cells" / f"{entry}-medmnist_pneumonia-k4-s0" / "train"
        recite = json.loads((cell / "train.json").read_text())["rewards"][2]
        assert recite["metric"] == "recitation_bleu" and recite["args"]["delta"] == delta
        assert recite["args"]["knowledge"].endswith("knowledge/medmnist_pneumonia.txt")
        rows = [json.loads(line) for line in (cell / "completions.jsonl").read_text().splitlines()]
        assert rows and all("recitation_bleu" in r["rewards"] for r in rows)
    assert measured(record, "V-RFT + PA_P + delta- R_recite (delta = -2)")["Pneumonia"]["value"] is not None
    assert "V-RFT + PA_P + delta- R_recite (delta = -2) · published" in (out / "leaderboard.md").read_text()
