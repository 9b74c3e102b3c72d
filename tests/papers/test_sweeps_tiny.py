"""Tiny profiles of the GRPO-study and RARL sweep files, end to end with the real `medharness train` and
`run`: each shipped sweep with its recipe entries, presets, rewards and table kept, and only what a CPU cannot
do swapped: a tiny random-weight Qwen2-VL, the phantom tasks (or a reasoning_vqa folder written from phantom
scans, whose reasoning text is generated from the scan's own truth), two steps a cell, small local models for
BERTScore and the cross-encoder, and the semantic judge played by the scripted local HTTP server.

A cell costs about a minute of a shared 2-core CPU (two subprocesses that import torch and TRL), so the GRPO
study's profile runs one cell of each kind (SFT LoRA, DPO, GRPO + semantic judge + CWR, Dr.GRPO); its other
rows differ from these only in presets and reward lists, which the dry run of the shipped file constructs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("trl")
pytest.importorskip("openai")

from fake_api_server import FakeAPIServer  # tests/support
from metric_models import build_metric_models  # tests/support

from medharness.cli import main
from medharness.taskfiles.task import load_task

SWEEPS = Path(__file__).resolve().parents[2] / "trainers" / "sweeps"
KEY_ENV = "MEDHARNESS_TEST_JUDGE_KEY"
TINY = ["samples.limit=4", "max_pixels=12544", "recipes.rarl.trl.num_generations=2",
        "recipes.rarl.trl.per_device_train_batch_size=2", "recipes.rarl.trl.gradient_accumulation_steps=1",
        "recipes.rarl.trl.max_completion_length=8", "recipes.rarl.trl.bf16=false",
        "recipes.rarl.trl.activation_checkpointing=false", "recipes.rarl.trl.save_steps=1"]
EVAL = {"limit": 2, "batch_size": 2, "max_new_tokens": 12, "backend": "hf",
        "backend_options": {"device": "cpu"}}
R1 = ("rewards=[{metric: yes_no_accuracy, weight: 1.0}, "  # the study's accuracy + format, for a yes/no task
      "{metric: format_compliance, args: {format: r1}, weight: 1.0}]")


@pytest.fixture(scope="module")
def judge_server() -> Iterator[FakeAPIServer]:
    with FakeAPIServer(max_requests=2000, max_seconds=900,
                       answer_by_model=lambda text, model: '{"coherent": "Yes"}') as srv:
        yield srv


@pytest.fixture(scope="module")
def metric_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_metric_models(tmp_path_factory.mktemp("metric-models"))


def profile(name: str, out: Path, only: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    """The shipped sweep with the tiny profile's changes (launch settings dropped: they need GPUs); `only`:
    the recipe entries to run (the table keeps their rows and the reference rows)."""
    data = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())
    data.pop("launch", None)
    data.pop("data_dir", None)
    data.update(common_presets=["tiny_cpu"], max_steps=2, eval=EVAL, **changes)
    data["overrides"] = [*data.get("overrides", []), *TINY]
    if only is not None:
        data["recipes"] = [e for e in data["recipes"] if e["id"] in only]
        data["table"]["rows"] = [r for r in data["table"]["rows"]
                                 if r.get("entry", "-") in only or "reference" in r]
    return data


def run_sweep(data: dict[str, Any], out: Path) -> dict[str, Any]:
    file = out / "sweep.yaml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out / "s")]) == 0
    record = json.loads((out / "s" / "sweep.json").read_text())
    assert not record["failed"] and all(c["finished"] for c in record["cells"])
    return record


def reasoning_data(folder: Path) -> Path:
    """A reasoning_vqa folder from phantom scans: question, yes/no answer and a reasoning text from the
    truth."""
    task = load_task("phantom_presence")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for split, source in (("train", "train"), ("test", "test")):
        records = []
        for sample in task.load_samples(source)[:6]:
            image = f"{split}-{sample.id}.png"
            task.open_image(sample.images[0]).save(folder / "images" / image)
            n = int(sample.meta["n_lesions"])
            records.append({"id": sample.id, "image": image, "question": sample.question,
                            "answer": sample.target, "answer_type": "CLOSED",
                            "reasoning": f"The scan shows {n} bright lesion(s) inside the body outline, so "
                                         f"the answer is {sample.target}."})
        (folder / f"{split}.json").write_text(json.dumps(records))
    return folder


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a shared CPU under load
def test_grpo_study_table1_tiny(tmp_path: Path, tiny_models: dict[str, Path], judge_server: FakeAPIServer,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """One cell of each kind of Table 1 trains two steps on phantom_presence (SFT LoRA, DPO, GRPO + semantic
    judge + CWR, Dr.GRPO); the semantic reward is the judge panel, async, through the local server."""
    monkeypatch.setenv(KEY_ENV, "sk-test")
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    model = str(tiny_models["qwen2_vl"])
    panel = tmp_path / "panel.yaml"
    panel.write_text(json.dumps([{"name": "sem", "spec": "semantic_v1", "backend": "openai", "model": "m",
                                  "base_url": f"{judge_server.url}/v1", "api_key_env": KEY_ENV}]))
    data = profile("grpo_study_table1", tmp_path, only=["sft-lora", "dpo", "grpo-sem-cwr", "dr-grpo"],
                   model=model, tasks=["phantom_presence"], prompt="r1", eval_prompt="r1")
    data["overrides"].append(R1)  # the preset's choice_accuracy has no value on yes/no answers
    reference_llms = "semantic_fig1_v1:hf_lm:microsoft/biogpt,semantic_fig1_v1:hf_lm:BioMistral/BioMistral-7B"
    for entry in data["recipes"]:
        entry["overrides"] = [o.replace("choice_accuracy", "yes_no_accuracy")
                              .replace(f"judges: '{reference_llms}'", f"panel: '{panel}'")
                              .replace("model=Qwen/Qwen2-VL-2B", f"model={model}")
                              for o in entry.get("overrides", [])]
    data["table"]["columns"] = [{"label": c["label"], "task": "phantom_presence",
                                 **({"metric": "think_length"} if c["label"] != "accuracy" else {})}
                                for c in data["table"]["columns"]]  # the r1 variant's metrics stand in
    judge_server.reset()
    record = run_sweep(data, tmp_path)
    assert len(record["cells"]) == 4
    cells = tmp_path / "s" / "cells"
    sem = [json.loads(x) for x in (cells / "grpo-sem-cwr-grpo_study_paper-phantom_presence-kall-s0"
                                   / "train" / "completions.jsonl").read_text().splitlines()]
    assert {"yes_no_accuracy", "format_compliance", "semantic", "cwr"} == set(sem[0]["rewards"])
    judged = [r["rewards"]["semantic"] for r in sem]
    assert set(judged) <= {1.0, None}  # Yes = 1; a completion without a closed <think> is unscored, not 0
    assert (1.0 in judged) == bool(judge_server.requests)
    train = json.loads((cells / "dr-grpo-grpo_study_paper-phantom_presence-kall-s0" / "train" /
                        "train.json").read_text())
    assert (train["config"]["trl"]["loss_type"] == "dr_grpo"
            and train["config"]["trl"]["scale_rewards"] == "none")
    board = (tmp_path / "s" / "leaderboard.md").read_text()
    for label in ("Dr.GRPO", "GRPO + semantic alignment + CWR", "SFT LoRA", "DPO",
                  "Llama-3.2-11B-Vision-Instruct"):
        assert label in board


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rarl_tables_tiny(tmp_path: Path, tiny_models: dict[str, Path], metric_models: dict[str, str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """RARL Tables 3 (SFT, RL + LoRA) and 6 (prompting diversity) trained two steps each with the rarl
    recipe's own rewards on a reasoning_vqa folder; prompting diversity records a style per sample; the vision
    tower stays frozen. (Table 2's entries are the same recipes on other data: its dry run constructs
    them.)"""
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    data_dir = reasoning_data(tmp_path / "reasoning")
    model = str(tiny_models["qwen2_vl"])
    # rarl cells only (SFT has none)
    options = [f"recipes.rarl.options.bertscore_model={metric_models['bert']}",
               "recipes.rarl.options.bertscore_layers=2",
               f"recipes.rarl.options.similarity_model={metric_models['cross']}"]
    runs = (("rarl_table3", None, {}),
            ("rarl_table6", ["pd-reasoning"], {"reasoning_judged": "reasoning"}))  # one training of the two
    for name, only, eval_prompts in runs:
        data = profile(name, tmp_path / name, only=only, model=model, eval_tasks=["reasoning_vqa"],
                       data_dir=str(data_dir), eval_prompt="reasoning")
        data["overrides"] += options
        for entry in data["recipes"]:
            entry["eval_prompt"] = eval_prompts.get(entry.get("eval_prompt"), entry.get("eval_prompt"))
        data["table"]["rows"] = [r for r in data["table"]["rows"] if r["task"] == "reasoning_vqa"]
        data["table"]["columns"] = [{"label": c["label"]} if c["label"] == "rule-based final" else
                                    {"label": c["label"], "metric": "format_compliance"}
                                    for c in data["table"]["columns"]]  # the unjudged variants stand in
        record = run_sweep(data, tmp_path / name)
        for cell in record["cells"]:
            train = json.loads((tmp_path / name / "s" / "cells" / cell["id"] / "train" / "train.json")
                               .read_text())
            if train["recipe"] != "rarl":
                continue
            # Table 3's RL + LoRA row is the pipeline without the reasoning reward (Table 6 measures RARL's
            # gain against it); Table 6's cells carry all four components
            reasoning = [] if name == "rarl_table3" else ["reasoning_similarity"]
            assert [r["label"] for r in train["rewards"]] == ["rarl_format", "length_reward", "rarl_accuracy",
                                                              *reasoning]
            assert train["trainable_tensors"] > 0  # LoRA tensors train; check_vision_frozen passed
        if name == "rarl_table6":
            styles = json.loads((tmp_path / name / "s" / "cells" / "pd-reasoning-rarl-reasoning_vqa-kall-s0" /
                                 "train" / "prompt_styles.json").read_text())
            assert set(styles["assignment"].values()) <= {"explanation", "short", "open_ended"}
            assert sum(styles["counts"].values()) == 4 and styles["seed"] == 0
