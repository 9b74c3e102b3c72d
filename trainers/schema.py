"""The recipe config's schema: what a preset, `--config FILE` and `-C` overrides may set (loading and
layering: `config.py`)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from medharness.core.dtypes import DTYPE_CHOICES
from medharness.core.records import Strict

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_2_or_sdpa")


class LoraSpec(Strict):
    """A PEFT LoRA adapter on the language model; `freeze_vision` keeps it off the vision tower."""

    r: int = Field(8, ge=1, description="the LoRA rank")
    alpha: int = Field(16, ge=1, description="the LoRA alpha (scaling)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA layers")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      min_length=1, description="the modules that get an adapter")
    freeze_vision: bool = Field(True, description="keep the adapters off the vision tower (its modules are "
                                                  "excluded)")
    merge_for_rollouts: bool = Field(True, description=(
        "GRPO-family recipes: sample rollouts (HF generate) with the adapters merged into the base weights, "
        "which are restored exactly after each generation: the full model's cost per token "
        "(trainers/rollouts.py)"))


class RewardSpec(Strict):
    """One reward component: a registered metric, its arguments and weight (`as`: its label)."""

    metric: str = Field(description="a registered metric (`medharness ls metrics`)")
    weight: float = Field(1.0, allow_inf_nan=False, description="its weight in TRL's reward_weights")
    args: dict[str, Any] = Field(default_factory=dict,
                                 description="the metric's arguments; '@model' stands for the model being "
                                             "trained")
    label: str | None = Field(None, alias="as", description="the component's label (default: the metric's)")


class SamplesSpec(Strict):
    """Training samples: the task's `split`, narrowed to the ids of `file` (`medharness split` output or a
    `--samples` id list), then the first `limit`."""

    split: str = Field("train", description="the task split trained on")
    file: str | None = Field(None, description="training sample ids (a `medharness split` file or an id "
                                               "list)")
    balanced: bool = Field(False, description="then the first k samples of each gold answer, k the rarest "
                                              "answer's count (class-balanced training; the split itself, "
                                              "and so the majority baseline, keeps its own mix)")
    limit: int | None = Field(None, ge=1, description="then only the first N")
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="GRPO: a sample whose prompt (text and image tokens, as the processor counts "
                                "them) is longer is left out before training, counted and listed in "
                                "OUTPUT/prompt_cap.json (never truncated: that would cut image tokens)")


class TrainConfig(Strict):
    recipe: str = Field(description="the training recipe: sft, dpo, grpo, vrft_aug, rarl "
                                    "(`medharness ls recipes`)")
    model: str | None = Field(None, description="the base model: hub id or folder (a folder with "
                                                "medharness.json becomes the parent); required to train")
    task: str | None = Field(None, description="the task to train on (a name or a task YAML path); required "
                                               "to train")
    prompt: str | None = Field(None, description="the task's prompt variant (its parser and format; default: "
                                                 "the task's default)")
    prompt_styles: list[str] | None = Field(
        None, description="RARL's prompting diversity: each training sample rendered in one of these prompt "
                          "variants, seeded, recorded in OUTPUT/prompt_styles.json")
    data_dir: str | None = Field(None, description="the task's local data copy")
    samples: SamplesSpec = Field(SamplesSpec(), description="which samples are trained on (`SamplesSpec`)")
    seed: int = Field(0, ge=0, le=2**32 - 1,
                      description="run seed (TRL seed and data_seed): data order, sampling, vLLM")
    rewards: list[RewardSpec] | None = Field(
        None, min_length=1,
        description="GRPO's reward components (`RewardSpec`); null: the task's primary metric (+ format "
                    "compliance, 0.9 / 0.1)")
    rejected: str = Field("other_label", description="DPO's rejected answers: other_label, other_sample or "
                                                     "run:DIR")
    lora: LoraSpec | None = Field(None, description="train a LoRA adapter (`LoraSpec`); null: a full "
                                                    "fine-tune")
    freeze_vision: bool = Field(False, description="full fine-tunes: freeze the vision tower too (presets: "
                                                   "true)")
    ablate: Literal["blank", "noise", "shuffle", "labels"] | None = Field(
        None, description="a control run that must NOT learn: train on blank or noise images, on another "
                          "sample's image (shuffle), or (sft, dpo) on another sample's answer (labels)")
    attn_implementation: str = Field(
        "sdpa",
        description="sdpa, eager or flash_attention_2 (needs flash-attn: a ConfigError before loading); "
                    "flash_attention_2_or_sdpa: flash_attention_2 on a GPU where flash-attn is installed, "
                    "else sdpa (train.json records the kernel used)")
    dtype: str = Field("auto", description="auto: bfloat16 on GPU, float32 on CPU; or a dtype name "
                                           "(float32, bfloat16, float16, ...)")
    max_pixels: int | None = Field(None, ge=1, description="null: the processor's pixel budget; set it and "
                                                           "the saved processor uses it too")
    min_pixels: int | None = Field(None, ge=1, description="null: the processor's own minimum")
    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="any GRPOConfig / SFTConfig / DPOConfig setting, checked by TRL's own config class")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the recipe's own settings, checked by its options model (vrft_aug: reward, "
                    "accuracy_weight, recitation, ...); a recipe without options refuses any")

    @field_validator("attn_implementation")
    @classmethod
    def _attn(cls, value: str) -> str:
        if value not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"must be one of {', '.join(ATTN_IMPLEMENTATIONS)}")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value not in DTYPE_CHOICES:
            raise ValueError(f"must be one of {', '.join(DTYPE_CHOICES)}")
        return value

    @field_validator("rejected")
    @classmethod
    def _rejected(cls, value: str) -> str:
        if value not in ("other_label", "other_sample") and not value.startswith("run:"):
            raise ValueError("must be other_label, other_sample or run:DIR")
        return value

    @property
    def freezes_vision(self) -> bool:
        return self.lora.freeze_vision if self.lora is not None else self.freeze_vision


# TRL settings whose bad values TRL accepts when its config is built and fails on later (a traceback once the
# output folder exists), or never: checked with the config (`trl_problems`), before any folder or model.
def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _count(least: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


TRL_CHECKS: dict[str, tuple[Any, str]] = {
    **dict.fromkeys(("learning_rate", "temperature", "num_train_epochs", "logging_steps", "save_steps"),
                    (_positive, "a finite number > 0")),
    **dict.fromkeys(("beta", "weight_decay", "max_grad_norm", "epsilon", "epsilon_high", "warmup_ratio"),
                    (_non_negative, "a finite number >= 0")),
    **dict.fromkeys(("per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length",
                     "num_iterations", "steps_per_generation"), (_count(1), "an integer >= 1")),
    **dict.fromkeys(("warmup_steps", "top_k"), (_count(0), "an integer >= 0")),
    "num_generations": (_count(2), "an integer >= 2 (a group of one has no advantage)"),
    "max_steps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and (v == -1 or v >= 1),
                  "an integer >= 1, or -1 (the epochs decide)"),
    "top_p": (lambda v: _positive(v) and v <= 1, "a number in (0, 1]"),
    "push_to_hub": (lambda v: v is False, "false: medharness never uploads a model"),
}


def trl_problems(trl: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, what it must be) for each `trl:` value that TRL_CHECKS refuses; None leaves TRL's default."""
    problems = []
    for key, value in trl.items():
        check = TRL_CHECKS.get(key)
        if check is not None and value is not None and not check[0](value):
            problems.append((key, check[1]))
    return problems
