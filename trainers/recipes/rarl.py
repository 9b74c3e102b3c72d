"""`rarl`: RARL (Pham and Ngo) as a GRPO recipe: TRL's GRPOTrainer + LoRA (the `rarl` preset: r 8, alpha 16 on
q/k/v/o, vision tower frozen and asserted frozen, 5 epochs, a checkpoint every 100 steps) with the paper's
rewards, each a registered metric scored through the task's own parser (docs/recipes/rarl.md):

- format (`rarl_format`): 1.0 for `<think>...</think><answer>...</answer>`, 0.1 for partial tags, else 0;
- length (`length_reward`): min(0.001 x completion tokens, 1.0); in training the tokens are the ids the policy
  generated (TRL's `completion_ids`), in `medharness reward` the text re-tokenised by the model's tokenizer;
- accuracy (`rarl_accuracy`): binary for closed and yes/no questions, BERTScore F1 for open ones;
- reasoning, against the sample's annotated reasoning (`meta.reasoning`, the `reasoning_vqa` task), None where
  a sample has none. The paper does not define it; `reasoning:` picks the form: `similarity` (a
  cross-encoder's score of the `<think>` text vs the annotated reasoning, `reasoning_similarity`), `judge` (a
  judge panel's `rarl_v2` reasoning_score, `judge_score` with `requires: reasoning`) or `none`.

The paper gives no weights: every component has weight 1 (TRL sums them), a setting (`weights:`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from medharness.core.records import Strict
from medharness.trainers.recipes.base import trainer
from medharness.trainers.recipes.grpo import GRPORecipe
from medharness.trainers.schema import RewardSpec

if TYPE_CHECKING:
    from medharness.taskfiles.task import Task
    from medharness.trainers.schema import TrainConfig


class RarlWeights(Strict):
    format: float = 1.0
    length: float = 1.0
    accuracy: float = 1.0
    reasoning: float = 1.0


class RarlOptions(Strict):
    """`options:` of the rarl recipe."""

    reasoning: Literal["similarity", "judge", "none"] = "similarity"
    similarity_model: str = "cross-encoder/stsb-roberta-base"  # a local folder or hub id
    judges: str = "rarl_v2:openai:gpt-4o-mini"  # the judge form's panel (SPEC:BACKEND:MODEL,...)
    judge_panel: str | None = None  # or a --judge-config file (replaces `judges`)
    bertscore_model: str = "roberta-large"  # BERTScore for open answers: a local folder or hub id ...
    bertscore_layers: int = Field(17, ge=1)  # ... and the layer whose embeddings it compares
    length_scale: float = Field(0.001, ge=0.0)
    length_cap: float = Field(1.0, ge=0.0)
    length_tokenizer: str = "@model"  # @model: the generated ids in training (else this tokenizer re-counts)
    weights: RarlWeights = RarlWeights()


def rarl_rewards(opts: RarlOptions) -> list[RewardSpec]:
    """format, length, accuracy and (unless `reasoning: none`) the reasoning reward, labelled as the paper."""
    w = opts.weights
    specs = [
        RewardSpec(metric="rarl_format", weight=w.format),
        RewardSpec(metric="length_reward", weight=w.length,
                   args={"scale": opts.length_scale, "cap": opts.length_cap,
                         "tokenizer": opts.length_tokenizer}),
        RewardSpec(metric="rarl_accuracy", weight=w.accuracy,
                   args={"model": opts.bertscore_model, "num_layers": opts.bertscore_layers}),
    ]
    if opts.reasoning == "similarity":
        specs.append(RewardSpec(metric="reasoning_similarity", weight=w.reasoning,
                                args={"reference": "reasoning", "model": opts.similarity_model}))
    elif opts.reasoning == "judge":
        panel = {"panel": opts.judge_panel} if opts.judge_panel else {"judges": opts.judges}
        specs.append(RewardSpec(metric="judge_score", weight=w.reasoning,
                                args={**panel, "field": "reasoning_score", "requires": "reasoning"}))
    return specs


@trainer("rarl")
class RarlRecipe(GRPORecipe):
    description = ("RARL: GRPO + LoRA with format, length, accuracy (BERTScore for open answers) and "
                   "reasoning rewards")
    own_preset = "rarl"
    options_model = RarlOptions

    def default_rewards(self, task: Task, prompt: str, config: TrainConfig) -> list[RewardSpec]:
        return rarl_rewards(RarlOptions.model_validate(config.options))
