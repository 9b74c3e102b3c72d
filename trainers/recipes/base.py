"""The trainer extension point: `TRAINERS = Registry("trainer")` and `@trainer("name")`.

A trainer is a recipe class that configures one TRL trainer (never a fork of it): it names the TRL config
class that validates the recipe file's `trl:` section, the dataset format its samples become
(`trainers/data.py`), whether it has rewards, and how to build the TRL trainer from a prepared `TrainContext`.
Recipe modules import trl/torch only inside `build`, so listing trainers stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from medharness.core.errors import ConfigError
from medharness.core.registry import Registry
from medharness.core.torchvision_shim import ensure_torchvision_importable

if TYPE_CHECKING:
    from pydantic import BaseModel

    from medharness.core.records import Sample
    from medharness.taskfiles.task import Task
    from medharness.trainers.rewards import RewardSet
    from medharness.trainers.schema import RewardSpec, TrainConfig

TRAINERS: Registry[type[TrainerRecipe]] = Registry("trainer")


def trainer(name: str) -> Callable[[type[TrainerRecipe]], type[TrainerRecipe]]:
    """Register a recipe class under `name` (e.g. `@trainer("grpo")`)."""

    def decorator(cls: type[TrainerRecipe]) -> type[TrainerRecipe]:
        cls.name = name
        TRAINERS.register(name, cls)
        return cls

    return decorator


@dataclass
class TrainContext:
    """Everything a recipe needs to build its TRL trainer; prepared by `trainers/run.py`."""

    config: TrainConfig
    task: Task
    samples: list[Sample]
    model: Any  # the loaded (possibly vision-frozen) model
    processor: Any
    trl_args: Any  # the constructed TRL config object
    dataset: Any  # a `datasets.Dataset` in the recipe's format
    output: Path
    rewards: RewardSet | None = None
    peft_config: Any = None
    callbacks: list[Any] = field(default_factory=list)


class TrainerRecipe:
    """One training method. Subclasses set the class attributes and implement `build`."""

    name: ClassVar[str] = ""
    trl_config: ClassVar[str] = ""  # the TRL config class name, e.g. "GRPOConfig"
    data_format: ClassVar[str] = ""  # "prompt" (GRPO) | "completion" (SFT) | "preference" (DPO)
    uses_rewards: ClassVar[bool] = False
    description: ClassVar[str] = ""
    own_preset: ClassVar[str | None] = None  # the preset `--recipe NAME` starts from (default: NAME's own)
    options_model: ClassVar[type[BaseModel] | None] = None  # validates the config's `options:` section

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> Any:
        """The config's `options:` as the recipe's model (pydantic raises on a bad key or value)."""
        if cls.options_model is None:
            if options:
                raise ConfigError(f"recipe {cls.name} takes no `options:` (got {', '.join(sorted(options))})")
            return None
        return cls.options_model.model_validate(options)

    def default_rewards(self, task: Task, prompt: str, config: TrainConfig) -> list[RewardSpec] | None:
        """The rewards when the config gives none; None: the task's primary metric (+ format compliance)."""
        return None

    @classmethod
    def config_class(cls) -> type:
        """TRL's own config class for this recipe (imports trl)."""
        ensure_torchvision_importable()  # before transformers/trl pull torchvision in
        return getattr(importlib.import_module("trl"), cls.trl_config)

    @staticmethod
    def trl_injections(settings: dict[str, Any], reward_weights: list[float],
                       suppress: list[int]) -> dict[str, Any]:
        """TRL settings medharness derives for this recipe (reward weights, suppressed token ids)."""
        return {}

    def build(self, ctx: TrainContext) -> Any:
        """The configured TRL trainer, ready for `.train()`."""
        raise NotImplementedError


def recipe_class(name: str) -> type[TrainerRecipe]:
    """The registered recipe `name` ("did you mean" on a miss)."""
    return TRAINERS.get(name)
