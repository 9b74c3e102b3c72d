"""`sft`: TRL's SFTTrainer on the gold answers, written in the prompt variant's own answer format.

The rows are prompt-completion pairs, so the loss is on the answer tokens only (TRL's `completion_only_loss`,
on for this format unless a preset sets it false): a loss over the whole conversation is dominated by the
prompt, which is the same in every row, and hides whether the answer is learned."""

from __future__ import annotations

from typing import Any

from medharness.trainers.recipes.base import TrainContext, TrainerRecipe, trainer


@trainer("sft")
class SFTRecipe(TrainerRecipe):
    trl_config = "SFTConfig"
    data_format = "completion"
    description = "supervised fine-tuning on the gold answers (TRL SFTTrainer); LoRA via `lora:`"

    def build(self, ctx: TrainContext) -> Any:
        from trl import SFTTrainer

        return SFTTrainer(model=ctx.model, processing_class=ctx.processor, args=ctx.trl_args,
                          train_dataset=ctx.dataset, peft_config=ctx.peft_config, callbacks=ctx.callbacks)
