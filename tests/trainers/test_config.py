"""Recipe configs: presets, layering, strict keys with file:line errors, TRL validation, and the drift
test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medharness.core.errors import ConfigError
from medharness.trainers.config import build_config, load_layers, preset_names, trl_args
from medharness.trainers.recipes.base import TRAINERS
from medharness.trainers.run import TrainRequest, resolve

pytest.importorskip("trl")

# What each shipped preset must set explicitly (and TRL must hold after construction): TRL's defaults for
# these moved between versions, and a paper's numbers depend on them.
GRPO_TABLE = {"beta": 0.04, "loss_type": "grpo", "scale_rewards": "group", "num_generations": 8,
              "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_completion_length": 700,
              "learning_rate": 1e-6, "epsilon": 0.2, "num_iterations": 1, "activation_checkpointing": True,
              "vllm_importance_sampling_correction": False,
              "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "max_steps": 1500,
              "use_vllm": False, "mask_truncated_completions": False, "importance_sampling_level": "token"}
TABLES = {
    "grpo": GRPO_TABLE,
    "dr_grpo": {**GRPO_TABLE, "loss_type": "dr_grpo", "scale_rewards": "none"},
    "grpo_lora": {**GRPO_TABLE, "learning_rate": 1e-5},
    "sft": {"learning_rate": 1e-5, "max_length": None, "packing": False, "activation_checkpointing": True,
            "per_device_train_batch_size": 1, "gradient_accumulation_steps": 2, "loss_type": "nll",
            "assistant_only_loss": False, "max_steps": 1500},
    "sft_lora": {"learning_rate": 1e-4, "max_length": None, "packing": False,
                 "activation_checkpointing": True, "per_device_train_batch_size": 1,
                 "gradient_accumulation_steps": 2, "loss_type": "nll",
                 "assistant_only_loss": False, "max_steps": 1500},
    "dpo": {"beta": 0.1, "loss_type": ["sigmoid"], "learning_rate": 1e-6, "max_length": None,
            "activation_checkpointing": True, "label_smoothing": 0.0, "precompute_ref_log_probs": False,
            "per_device_train_batch_size": 1, "gradient_accumulation_steps": 2, "max_steps": 1500},
    "vrft_aug_paper": {**GRPO_TABLE, "temperature": 0.9, "max_completion_length": 1024,
                       "optim": "adamw_torch", "gradient_accumulation_steps": 32, "max_steps": 120},
    "dpo_lora": {"beta": 0.1, "loss_type": ["sigmoid"], "learning_rate": 1e-5, "max_length": None,
                 "activation_checkpointing": True, "label_smoothing": 0.0, "precompute_ref_log_probs": False,
                 "per_device_train_batch_size": 1, "gradient_accumulation_steps": 2, "max_steps": 1500},
}


def _args(tmp_path: Path, presets: list[str], overrides: list[str] = (),  # type: ignore[assignment]
          use_gpu: bool = False):
    layers = load_layers(None, presets, None, {"task": "phantom_presence", "model": "m"}, list(overrides))
    config = build_config(layers)
    return config, trl_args(config, layers, tmp_path, use_gpu=use_gpu)


def test_every_recipe_has_presets() -> None:
    assert set(TRAINERS.names()) >= {"sft", "dpo", "grpo"}
    assert set(preset_names()) >= {*TABLES, "tiny_cpu"}


@pytest.mark.parametrize("preset", sorted(TABLES))
def test_preset_drift(tmp_path: Path, preset: str) -> None:
    """Each preset sets its table explicitly, and TRL's constructed config holds exactly those values:
    a TRL upgrade that moves a default or renames a key fails here."""
    layers = load_layers(None, [preset], None, {"task": "phantom_presence", "model": "m"}, [])
    written = layers.data["trl"]
    config, args = _args(tmp_path, [preset])
    for key, value in TABLES[preset].items():
        assert key in written, f"preset {preset} must set trl.{key} explicitly"
        assert getattr(args, key) == pytest.approx(value) if isinstance(value, float) else \
            getattr(args, key) == value, (preset, key, getattr(args, key))
    assert written["bf16"] == "auto" and args.bf16 is False  # auto: on GPU only
    assert args.gradient_checkpointing == args.activation_checkpointing  # the deprecated alias mirrors it
    assert args.seed == config.seed == 0
    assert args.report_to in ("none", [], ["none"])
    lora = config.lora
    assert (lora is not None) == preset.endswith("_lora")
    assert config.freezes_vision != (preset == "vrft_aug_paper")  # VRFT-Aug: "the model is fully fine-tuned"


def test_dr_grpo_is_a_grpo_preset(tmp_path: Path) -> None:
    config, args = _args(tmp_path, ["dr_grpo"])
    assert config.recipe == "grpo" and args.loss_type == "dr_grpo" and args.scale_rewards == "none"


def test_overlay_and_overrides(tmp_path: Path) -> None:
    config, args = _args(tmp_path, ["grpo", "tiny_cpu"], ["trl.learning_rate=1e-5", "lora.r=4", "seed=7"])
    assert args.learning_rate == 1e-5 and args.num_generations == 2 and args.max_steps == 2
    assert config.lora is not None and config.lora.r == 4 and config.lora.alpha == 16
    assert args.seed == 7 and args.data_seed == 7
    sft, sft_args = _args(tmp_path, ["sft", "tiny_cpu"])  # the grpo-only part of the overlay is not applied
    assert sft.recipe == "sft" and not hasattr(sft_args, "num_generations")


def test_default_preset_is_the_recipes_own() -> None:
    layers = load_layers("grpo", [], None, {}, [])
    assert layers.presets == ["grpo"] and layers.data["trl"]["beta"] == 0.04
    assert load_layers("grpo", ["tiny_cpu"], None, {}, []).presets == ["grpo", "tiny_cpu"]


def test_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "my.yaml"
    cfg.write_text("recipe: grpo\ntask: phantom_presence\nmodel: m\nlora:\n  r: 4\n  alhpa: 8\n")
    with pytest.raises(ConfigError, match=r"my\.yaml:6: unknown key 'lora\.alhpa'"):
        resolve(TrainRequest(config_file=cfg))
    cfg.write_text("recipe: grpo\ntask: phantom_presence\nmodel: m\nrewards:\n  - {metric: iou, wieght: 1}\n")
    with pytest.raises(ConfigError, match=r"my\.yaml:5: unknown key 'rewards\.0\.wieght'"):
        resolve(TrainRequest(config_file=cfg))


def test_unknown_trl_key_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "my.yaml"
    cfg.write_text("recipe: grpo\ntask: phantom_presence\nmodel: m\ntrl:\n  beta: 0.0\n  num_generation: 4\n")
    config, layers = resolve(TrainRequest(config_file=cfg))
    with pytest.raises(ConfigError, match=r"my\.yaml:6: unknown TRL setting 'trl\.num_generation' for "
                                          r"GRPOConfig.*Did you mean 'num_generations'"):
        trl_args(config, layers, tmp_path, use_gpu=False)
    with pytest.raises(ConfigError, match=r"-C trl.bogus=1: unknown TRL setting"):
        _args(tmp_path, ["sft"], ["trl.bogus=1"])


def test_reserved_and_refused_trl_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trl.seed is set by medharness"):
        _args(tmp_path, ["grpo"], ["trl.seed=3"])
    with pytest.raises(ConfigError, match="GRPOConfig refused.*divisible by num_generations") as err:
        _args(tmp_path, ["grpo"], ["trl.num_generations=3"])
    # the error names the settings that clash and where each was set, not every key of the recipe
    text = str(err.value)
    assert "trl.num_generations = 3 (-C trl.num_generations=3)" in text
    assert "trl.per_device_train_batch_size = 8 (" in text and "grpo.yaml" in text
    assert "trl.learning_rate" not in text and "trl.beta" not in text


OVERLAYS = {"tiny_cpu", "tiny_learn", "tiny_lora"}  # presets naming no recipe, layered after one


def test_the_tiny_cpu_overlay_fits_every_recipe_preset(tmp_path: Path) -> None:
    after = {"vrft_aug_loc": ["vrft_aug_paper"]}  # an overlay itself: layered after its recipe preset
    for preset in [p for p in preset_names() if p not in OVERLAYS]:
        _, args = _args(tmp_path, [*after.get(preset, []), preset, "tiny_cpu"])
        assert args.max_steps == 2, preset


def test_the_tiny_learn_overlay_sets_each_recipe_its_own_schedule(tmp_path: Path) -> None:
    """tiny_learn (after tiny_cpu) fits the recipes bench/learning.py trains; each gets its own steps and
    learning rate, every sample and a trained vision tower."""
    expected = {"sft": (600, 3e-4, "cosine"), "grpo": (300, 1e-4, "cosine"),
                "dr_grpo": (300, 1e-4, "cosine"), "dpo": (300, 3e-5, "constant"),
                "vrft_aug_paper": (100, 1e-4, "cosine")}
    for preset, (steps, lr, schedule) in expected.items():
        config, args = _args(tmp_path, [preset, "tiny_cpu", "tiny_learn"])
        got = (args.max_steps, args.learning_rate, str(args.lr_scheduler_type.value))
        assert got == (steps, lr, schedule), preset
        assert config.samples.limit is None and config.samples.balanced and not config.freezes_vision
    _, grpo = _args(tmp_path, ["dr_grpo", "tiny_cpu", "tiny_learn"])
    assert (grpo.loss_type, grpo.beta, grpo.num_generations) == ("dr_grpo", 0.04, 8)
    _, dpo = _args(tmp_path, ["dpo", "tiny_cpu", "tiny_learn"])
    assert (list(dpo.loss_type), list(dpo.loss_weights)) == (["sigmoid", "sft"], [1.0, 1.0])
    _, vrft = _args(tmp_path, ["vrft_aug_paper", "tiny_cpu", "tiny_learn"])  # bench/learning_vrft.py
    assert (vrft.per_device_train_batch_size, vrft.num_generations, vrft.max_completion_length) == (32, 8, 40)


def test_the_tiny_lora_overlay_puts_adapters_on_every_linear_layer(tmp_path: Path) -> None:
    """tiny_lora after sft_lora + tiny_cpu + tiny_learn: tiny_learn's SFT schedule, an adapter on the vision
    tower too (its weights are random), and the adapter's own learning rate."""
    config, args = _args(tmp_path, ["sft_lora", "tiny_cpu", "tiny_learn", "tiny_lora"])
    assert config.lora is not None and not config.lora.freeze_vision and not config.freezes_vision
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (16, 32, 0.0)
    assert {"qkv", "fc1", "mlp.0", "q_proj", "down_proj"} <= set(config.lora.target_modules)
    assert (args.max_steps, args.learning_rate, str(args.lr_scheduler_type.value)) == (600, 1e-3, "cosine")


def test_unknown_recipe_and_preset_suggest() -> None:
    with pytest.raises(ConfigError, match="unknown trainer 'gpro'. Did you mean 'grpo'"):
        load_layers("gpro", [], None, {}, [])
    with pytest.raises(ConfigError, match="unknown preset 'grpo_lroa'. Did you mean 'grpo_lora'"):
        load_layers(None, ["grpo_lroa"], None, {}, [])
    with pytest.raises(ConfigError, match=r"set to different values: grpo \(.*grpo.yaml\); sft \(--recipe\)"):
        load_layers("sft", ["grpo"], None, {}, [])


def test_no_layer_switches_the_recipe_or_drops_a_section_silently(tmp_path: Path) -> None:
    """`recipe:` in --config or `-C recipe=` beside a preset of another recipe is refused (it used to train
    the preset's recipe without a word), and so is a layer that would replace a mapping (`trl: [1, 2]` wiped
    every preset TRL setting)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("recipe: sft\n")
    with pytest.raises(ConfigError, match=r"grpo \(.*grpo.yaml\); sft \(.*c.yaml\): name one"):
        load_layers(None, ["grpo"], cfg, {}, [])
    with pytest.raises(ConfigError, match=r"sft \(-C recipe=sft\)"):
        load_layers(None, ["grpo"], None, {}, ["recipe=sft"])
    assert load_layers(None, ["grpo"], None, {}, ["recipe=grpo"]).data["recipe"] == "grpo"
    cfg.write_text("trl: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"c.yaml:1: trl is a mapping of settings, got list"):
        load_layers(None, ["grpo"], cfg, {"trl.max_steps": 3}, [])
    assert load_layers(None, ["grpo_lora"], None, {}, ["lora=null"]).data["lora"] is None  # null removes


@pytest.mark.parametrize(("override", "message"), [
    ("trl.learning_rate=.nan", "trl.learning_rate = nan: must be a finite number > 0"),
    ("trl.learning_rate=-1", "must be a finite number > 0"),
    ("trl.learning_rate=fast", "trl.learning_rate = 'fast': must be a finite number > 0"),
    ("trl.temperature=0", "trl.temperature = 0: must be a finite number > 0"),
    ("trl.per_device_train_batch_size=0", "must be an integer >= 1"),
    ("trl.gradient_accumulation_steps=0", "must be an integer >= 1"),
    ("trl.num_generations=0", "must be an integer >= 2"),
    ("trl.max_completion_length=0", "must be an integer >= 1"),
    ("trl.logging_steps=.inf", "must be a finite number > 0"),
    ("trl.max_steps=0", "an integer >= 1, or -1"),
    ("trl.push_to_hub=true", "never uploads"),
    ("seed=-1", "seed: Input should be greater than or equal to 0"),
    ("seed=4294967296", "seed: Input should be less than or equal to 4294967295"),
    ("rewards=[{metric: yes_no_accuracy, weight: .nan}]",
     "rewards.0.weight: Input should be a finite number"),
])
def test_values_torch_or_trl_would_only_reject_later_are_refused_with_the_config(
        tmp_path: Path, override: str, message: str) -> None:
    """Each used to pass the config (and the dry run) and fail as a traceback after the output folder
    existed, or never; now the config names the layer that set it."""
    with pytest.raises(ConfigError, match=re.escape(f"-C {override}")) as err:
        _args(tmp_path, ["grpo"], [override])
    assert message in str(err.value)


def test_an_empty_lora_target_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lora.target_modules: List should have at least 1 item"):
        _args(tmp_path, ["grpo_lora"], ["lora.target_modules=[]"])


def test_missing_model_and_flash_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="train needs --model"):
        resolve(TrainRequest(recipe="sft", task="phantom_presence"))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flash_attn" else real(name, *a))
    with pytest.raises(ConfigError,
                       match="train: attn_implementation=flash_attention_2 needs the flash_attn package"):
        resolve(TrainRequest(recipe="sft", task="phantom_presence", model="m",
                             overrides=["attn_implementation=flash_attention_2"]))
    with pytest.raises(ConfigError, match="attn_implementation: Value error, must be one of"):
        resolve(TrainRequest(recipe="sft", task="phantom_presence", model="m",
                             overrides=["attn_implementation=x"]))


def test_recipe_scoped_settings_keep_their_layer(tmp_path: Path) -> None:
    """A preset's `recipes: {grpo: ...}` part does not beat a later -C or --config."""
    _, args = _args(tmp_path, ["grpo", "tiny_cpu"],
                    ["trl.num_generations=4", "trl.per_device_train_batch_size=4"])
    assert args.num_generations == 4
    cfg = tmp_path / "my.yaml"
    cfg.write_text("recipes:\n  grpo:\n    trl:\n      num_generatons: 4\n")
    config, layers = resolve(TrainRequest(presets=["grpo"], config_file=cfg, task="phantom_presence",
                                          model="m"))
    with pytest.raises(ConfigError, match=r"my\.yaml:4: unknown TRL setting 'trl\.num_generatons'"):
        trl_args(config, layers, tmp_path, use_gpu=False)
    cfg.write_text("recipes:\n  gpro: {}\n")
    with pytest.raises(ConfigError, match="Did you mean 'grpo'"):
        resolve(TrainRequest(presets=["grpo"], config_file=cfg, task="phantom_presence", model="m"))


def test_overrides_and_preset_names_are_values_not_code_or_paths() -> None:
    from medharness.trainers.config import parse_override, preset_path

    assert parse_override("trl.temperature=0.9") == (["trl", "temperature"], 0.9)
    with pytest.raises(ConfigError, match="anchors and aliases"):
        parse_override("trl.x=&a [1, 2]")
    with pytest.raises(ConfigError, match="unknown preset '../presets/grpo'"):
        preset_path("../presets/grpo")


def test_the_default_output_of_a_task_path_stays_in_runs_train() -> None:
    from medharness.trainers.run import default_output

    layers = load_layers(None, ["sft"], None, {"task": "../../../etc/x y.yaml", "model": "m"}, [])
    out = default_output(build_config(layers), layers)
    assert out.parent == Path("runs") / "train" and out.name.startswith("sft-x-y-")
