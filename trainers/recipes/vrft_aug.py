"""`vrft_aug`: VRFT-Aug (Yang, Yu, Qin et al. 2026, arXiv 2602.10619) as a GRPO recipe: TRL's GRPOTrainer with
the paper's rewards, all of them registered metrics scored through the task's own parser
(docs/recipes/vrft_aug.md).

    total = lambda x accuracy + (1 - lambda) x format [+ R_recite]        lambda = `accuracy_weight` (0.9)

- accuracy (`reward: auto`): boxes -> `iou_accuracy` with IoU > 0.5 (strict) in the variant's coordinate
  convention; ordinal grades -> `mfrs` (1, 1/4, 1/16 for 0, 1, 2 grades off); labels -> the task's primary
  metric (`label_accuracy`: lower-cased exact match). `reward: accuracy` uses exact grades on ordinal tasks
  (Table 3's R_acc).
- format: strict, from the prompt variant's parser: `think_boxed` (`<think>...</think>` then only
  `\\boxed{label}`), `think_answer_box` (`<think>` then `<answer>` holding JSON `[x1, y1, x2, y2]`), or `r1`
  for other `<answer>` tasks.
- recitation (`recitation: DELTA`): `recitation_bleu`, DELTA x BLEU(`<think>` text, the variant's knowledge
  block), DELTA = +0.2 rewards reciting the PA_P knowledge, -2 penalises it; needs a `knowledge` prompt
  variant.

PA_P is the tasks' `knowledge` variants; PA_pi is a sweep (GRPO on a `*_bbox` task, evaluated zero-shot on the
classification task), not a different trainer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from medharness.core.errors import ConfigError
from medharness.core.records import Strict
from medharness.taskfiles.task import recipe_for
from medharness.trainers.recipes.base import TrainContext, trainer
from medharness.trainers.recipes.grpo import GRPORecipe
from medharness.trainers.schema import RewardSpec

if TYPE_CHECKING:
    from medharness.taskfiles.task import Task
    from medharness.trainers.schema import TrainConfig

log = logging.getLogger(__name__)
BOX_METRICS = ("iou", "iou_accuracy")
# The box convention each model family was trained on (harness/scoring/boxes.py): Qwen2-VL 0-1000, Qwen2.5-VL
# pixels of its resized input.
FAMILY_COORDS = {"qwen2_vl": "norm1000", "qwen2_5_vl": "resized"}
GRADE_METRICS = ("grade_accuracy", "mfrs")


class PaperBatch(Strict):
    """The batch size as the paper states it and what it is taken to count (recorded, not applied)."""

    size: int = Field(ge=1)
    counts: Literal["prompts", "completions"]
    note: str = ""


class VrftOptions(Strict):
    """`options:` of the vrft_aug recipe."""

    reward: Literal["auto", "accuracy", "mfrs", "iou"] = "auto"
    accuracy_weight: float = Field(0.9, ge=0.0, le=1.0)  # lambda; the format weight is 1 - lambda
    recitation: float | None = None  # delta of R_recite (+0.2 or -2 in the paper); None: no recitation reward
    iou_threshold: float = Field(0.5, gt=0.0, lt=1.0)  # accuracy = IoU > threshold
    format: str | None = None  # None: from the prompt variant's parser
    paper_batch: PaperBatch | None = None


def _parser_names(task: Task, prompt: str) -> list[str]:
    variant = task.config.prompts.variants[prompt]
    spec = variant.parser or task.config.scoring.parser or []
    return [item if isinstance(item, str) else next(iter(item)) for item in spec]


def vrft_format(task: Task, prompt: str) -> str:
    """The strict format of a variant: think_boxed, think_answer_box or r1 (an error for variants without
    one)."""
    names = _parser_names(task, prompt)
    if "boxed" in names:
        return "think_boxed"
    if "answer_tag" in names:
        return "think_answer_box" if "json_bbox" in names else "r1"
    usable = [v for v in task.config.prompts.variants
              if {"boxed", "answer_tag"} & set(_parser_names(task, v))]
    raise ConfigError(f"vrft_aug: prompt '{prompt}' of task {task.name} does not ask for <think> and "
                      f"\\boxed{{}} or <answer>; use one of: "
                      f"{', '.join(usable) or 'none (add such a variant)'}")


def accuracy_reward(task: Task, prompt: str, opts: VrftOptions) -> RewardSpec:
    """The accuracy component for the task's answers (see the module docstring)."""
    recipe = recipe_for(task, prompt=prompt)
    primary = recipe.sample_primary
    if primary is None:
        raise ConfigError(f"task {task.name}: no per-sample metric to build VRFT-Aug's accuracy reward from")
    name = primary.metric.name
    kind = "box" if name in BOX_METRICS else "grade" if name in GRADE_METRICS else "label"
    wanted = {"auto": {"box": "iou", "grade": "mfrs"}.get(kind, "accuracy"), "accuracy": "accuracy",
              "mfrs": "mfrs", "iou": "iou"}[opts.reward]
    if (wanted == "mfrs" and kind != "grade") or (wanted == "iou" and kind != "box"):
        raise ConfigError(f"vrft_aug: reward '{opts.reward}' needs a "
                          f"{'grading' if wanted == 'mfrs' else 'box'} task; {task.name} is scored by {name}")
    weight = opts.accuracy_weight
    if kind == "box":
        return RewardSpec(metric="iou_accuracy", args={"threshold": opts.iou_threshold, "strict": True},
                          weight=weight)
    if kind == "grade":
        return RewardSpec(metric="mfrs" if wanted == "mfrs" else "grade_accuracy", weight=weight)
    return RewardSpec(metric=name, args=dict(primary.args), weight=weight)


def vrft_rewards(task: Task, prompt: str, opts: VrftOptions) -> list[RewardSpec]:
    """accuracy (lambda), format (1 - lambda) and, with `recitation`, R_recite (weight 1: delta is inside)."""
    specs = [accuracy_reward(task, prompt, opts),
             RewardSpec(metric="format_compliance", args={"format": opts.format or vrft_format(task, prompt)},
                        weight=1.0 - opts.accuracy_weight)]
    if opts.recitation is not None:
        variant = task.config.prompts.variants[prompt]
        if not variant.knowledge:
            with_knowledge = [n for n, v in task.config.prompts.variants.items() if v.knowledge]
            raise ConfigError(f"vrft_aug: the recitation reward compares the thinking with the prompt's "
                              f"knowledge, and prompt '{prompt}' of task {task.name} has none; use "
                              f"{', '.join(with_knowledge) or 'a knowledge variant (this task has none)'}")
        specs.append(RewardSpec(metric="recitation_bleu", weight=1.0,
                                args={"knowledge": str(task.path.parent / variant.knowledge),
                                      "delta": opts.recitation}))
    return specs


def box_coords(task: Task, prompt: str) -> str | None:
    """The coordinate convention of a variant's `json_bbox` parser (None: not a box variant)."""
    variant = task.config.prompts.variants[prompt]
    for item in variant.parser or task.config.scoring.parser or []:
        if isinstance(item, dict) and "json_bbox" in item:
            return str((item["json_bbox"] or {}).get("coords", "absolute"))
        if item == "json_bbox":
            return "absolute"
    return None


def coords_warning(model_type: str, task: Task, prompt: str) -> str | None:
    """A note when a box variant's convention is not the one the model family was trained on."""
    coords, native = box_coords(task, prompt), FAMILY_COORDS.get(model_type)
    if coords is None or native is None or coords == native:
        return None
    return (f"vrft_aug: prompt '{prompt}' of {task.name} asks for boxes in '{coords}' coordinates; "
            f"{model_type} was trained on '{native}' (a variant such as box_{native} matches it)")


@trainer("vrft_aug")
class VrftAugRecipe(GRPORecipe):
    description = ("VRFT-Aug: GRPO with strict-format, accuracy / IoU / MFRS and recitation rewards "
                   "(PA_P, PA_pi)")
    own_preset = "vrft_aug_paper"
    options_model = VrftOptions

    def default_rewards(self, task: Task, prompt: str, config: TrainConfig) -> list[RewardSpec]:
        return vrft_rewards(task, prompt, VrftOptions.model_validate(config.options))

    def build(self, ctx: TrainContext) -> Any:
        note = coords_warning(str(getattr(ctx.model.config, "model_type", "")), ctx.task,
                              ctx.task.prompt_name)
        if note:
            log.warning(note)
        return super().build(ctx)
