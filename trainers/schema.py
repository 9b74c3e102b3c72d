"""The recipe config's schema: what a preset, `--config FILE` and `-C` overrides may set (loading and
layering: `config.py`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from medharness.core.dtypes import DTYPE_CHOICES
from medharness.core.records import Strict

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


class LoraSpec(Strict):
    """A PEFT LoRA adapter on the language model; `freeze_vision` keeps it off the vision tower."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    freeze_vision: bool = True


class RewardSpec(Strict):
    """One reward component: a registered metric, its arguments and weight (`as`: its label)."""

    metric: str
    weight: float = 1.0
    args: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(None, alias="as")


class SamplesSpec(Strict):
    """Training samples: the task's `split`, narrowed to the ids of `file` (`medharness split` output or a
    `--samples` id list), then the first `limit`."""

    split: str = "train"
    file: str | None = None
    limit: int | None = Field(None, ge=1)


class TrainConfig(Strict):
    recipe: str
    model: str | None = None  # the base model (hub id or folder); required to train
    task: str | None = None  # required to train
    prompt: str | None = None  # the task's prompt variant; None = the task's default
    prompt_styles: list[str] | None = None  # RARL prompting diversity: a seeded style per sample (styles.py)
    data_dir: str | None = None  # the task's local data copy
    samples: SamplesSpec = SamplesSpec()
    seed: int = 0
    rewards: list[RewardSpec] | None = None  # None: the task's primary metric (+ format compliance)
    rejected: str = "other_label"  # DPO: other_label | other_sample | run:DIR
    lora: LoraSpec | None = None
    freeze_vision: bool = False  # full fine-tunes: freeze the vision tower too
    attn_implementation: str = "sdpa"
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU (core/dtypes.py: the names)
    max_pixels: int | None = Field(None, ge=1)  # None: the processor's own pixel budget
    min_pixels: int | None = Field(None, ge=1)
    trl: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)  # the recipe's own settings (its `Options` model)

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
