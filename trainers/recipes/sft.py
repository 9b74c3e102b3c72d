"""`sft`: TRL's SFTTrainer on the gold answers, written in the prompt variant's own answer format."""

from __future__ import annotations

from typing import Any

from medharness.trainers.recipes.base import TrainContext, TrainerRecipe, trainer


@trainer("sft")
class SFTRecipe(TrainerRecipe):
    trl_config = "SFTConfig"
    data_format = "messages"
    description = "supervised fine-tuning on the gold answers (TRL SFTTrainer); LoRA via `lora:`"

    def build(self, ctx: TrainContext) -> Any:
        from trl import SFTTrainer

        return SFTTrainer(model=ctx.model, processing_class=ctx.processor, args=ctx.trl_args,
                          train_dataset=ctx.dataset, peft_config=ctx.peft_config, callbacks=ctx.callbacks)
