"""The GRPO study's and RARL's presets hold the papers' settings, written explicitly and held by TRL's own
config (the drift test of test_config.py, for these two), and the rarl recipe builds the paper's rewards."""

from __future__ import annotations

from pathlib import Path

import pytest

from medharness.core.errors import ConfigError
from medharness.taskfiles.task import recipe_for
from medharness.trainers.config import build_config, load_layers, trl_args
from medharness.trainers.launch import LaunchSpec, accelerate_config, deepspeed_config
from medharness.trainers.prepare import load_train_task
from medharness.trainers.recipes.base import recipe_class
from medharness.trainers.recipes.rarl import RarlOptions, rarl_rewards
from medharness.trainers.rewards import component_label
from medharness.trainers.run import TrainRequest, resolve
from medharness.trainers.schema import RewardSpec

pytest.importorskip("trl")

STUDY = {"beta": 0.04, "loss_type": "grpo", "scale_rewards": "group", "num_generations": 8,
         "temperature": 1.0,
         "max_completion_length": 700, "learning_rate": 1e-6, "per_device_train_batch_size": 8,
         "gradient_accumulation_steps": 2, "max_steps": 1500, "top_k": 0, "epsilon": 0.2,
         "vllm_importance_sampling_correction": False}
RARL = {"beta": 0.04, "loss_type": "grpo", "scale_rewards": "group", "num_generations": 4,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "max_completion_length": 512,
        "learning_rate": 1e-5, "num_train_epochs": 5, "max_steps": -1, "save_steps": 100,
        "save_strategy": "steps"}


def _resolved(tmp_path: Path, presets: list[str],  # type: ignore[no-untyped-def]
              overrides: list[str] = ()):  # type: ignore[assignment]
    layers = load_layers(None, presets, None, {}, list(overrides))
    config = build_config(layers)
    return layers, config, trl_args(config, layers, tmp_path, use_gpu=False)


@pytest.mark.parametrize(("preset", "table"), [("grpo_study_paper", STUDY), ("rarl", RARL)])
def test_preset_drift(tmp_path: Path, preset: str, table: dict[str, object]) -> None:
    layers, config, args = _resolved(tmp_path, [preset])
    for key, value in table.items():
        assert key in layers.data["trl"], f"preset {preset} must set trl.{key} explicitly"
        got = getattr(args, key)
        got = getattr(got, "value", got)  # enums (save_strategy) compare by value
        assert (got == pytest.approx(value) if isinstance(value, float) else got == value), (key, got)
    assert config.model == "Qwen/Qwen2-VL-2B-Instruct" and config.freezes_vision and args.bf16 is False


def test_grpo_study_preset(tmp_path: Path) -> None:
    _, config, _ = _resolved(tmp_path, ["grpo_study_paper"])
    assert ((config.task, config.prompt, config.max_pixels, config.samples.limit)
            == ("pmc_vqa", "r1_paper", 401408, 10000))
    assert config.lora is None and config.freeze_vision
    assert [(r.metric, r.weight) for r in config.rewards or []] == [("choice_accuracy", 1.0),
                                                                    ("format_compliance", 1.0)]
    _, dr, dr_args = _resolved(tmp_path, ["grpo_study_paper", "dr_grpo"])
    assert (dr_args.loss_type, dr_args.scale_rewards) == ("dr_grpo", "none") and dr.max_pixels == 401408


def test_grpo_study_launch_config_for_four_gpus() -> None:
    """The generated ZeRO-2 launch: 4 processes, DeepSpeed stage 2 with batch sizes left to the TRL config."""
    spec = LaunchSpec("accelerate", 4, "zero2")
    acc = accelerate_config(spec, Path("/x/deepspeed_zero2.json"))
    ds = deepspeed_config(2)
    assert acc["distributed_type"] == "DEEPSPEED" and acc["num_processes"] == 4
    assert ds["zero_optimization"]["stage"] == 2 and ds["train_micro_batch_size_per_gpu"] == "auto"


def test_rarl_preset_and_recipe(tmp_path: Path) -> None:
    config, _ = resolve(TrainRequest(recipe="rarl"))
    assert config.recipe == "rarl" and (config.task, config.prompt) == ("reasoning_vqa", "reasoning")
    assert config.lora is not None and (config.lora.r, config.lora.alpha) == (8, 16)
    assert (config.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
            and config.lora.freeze_vision)
    task = load_train_task(config)
    specs = recipe_class("rarl")().default_rewards(task, task.prompt_name, config)
    recorded = recipe_for(task, prompt=task.prompt_name).metrics  # components are named by their metric
    assert [(component_label(s, recorded), s.metric) for s in specs] == [
        ("rarl_format", "rarl_format"), ("length_reward", "length_reward"),
        ("rarl_accuracy", "rarl_accuracy"), ("reasoning_similarity", "reasoning_similarity")]
    assert specs[1].args == {"scale": 0.001, "cap": 1.0, "tokenizer": "@model"}
    assert specs[3].args["reference"] == "reasoning"


def test_rarl_reasoning_forms() -> None:
    judge = rarl_rewards(RarlOptions(reasoning="judge"))[-1]
    assert judge == RewardSpec(metric="judge_score", weight=1.0,
                               args={"judges": "rarl_v2:openai:gpt-4o-mini", "field": "reasoning_score",
                                     "requires": "reasoning"})
    assert [s.metric for s in rarl_rewards(RarlOptions(reasoning="none"))] == ["rarl_format", "length_reward",
                                                                             "rarl_accuracy"]
    with pytest.raises(ValueError):
        RarlOptions.model_validate({"reasoning": "bleu"})


def test_prompt_styles_are_checked_when_the_config_resolves() -> None:
    config, _ = resolve(TrainRequest(recipe="rarl",
                                     overrides=["prompt_styles=[explanation, short, open_ended]"]))
    assert config.prompt_styles == ["explanation", "short", "open_ended"]
    with pytest.raises(ConfigError, match="unknown|no prompt|variant"):
        resolve(TrainRequest(recipe="rarl", overrides=["prompt_styles=[explanation, shrot]"]))
    # non_reasoning reads a bare answer, not <answer>
    with pytest.raises(ConfigError, match="parses answers"):
        resolve(TrainRequest(recipe="rarl", overrides=["prompt_styles=[explanation, non_reasoning]"]))


def test_style_assignment_is_seeded_and_recorded(tmp_path: Path) -> None:
    import json

    from medharness.core.records import Sample
    from medharness.trainers.styles import assign_styles, record_styles

    samples = [Sample(task="t", id=f"s{i}", question="q", target="a") for i in range(40)]
    styles = ["explanation", "short", "open_ended"]
    first, again, other = (assign_styles(samples, styles, seed) for seed in (0, 0, 1))
    assert first == again and first != other and set(first.values()) == set(styles)
    counts = record_styles(tmp_path, styles, 0, first)
    saved = json.loads((tmp_path / "prompt_styles.json").read_text())
    assert saved["assignment"] == first and saved["counts"] == counts and sum(counts.values()) == 40
