"""`dpo`: TRL's DPOTrainer; chosen = the gold answer, rejected = a wrong answer from the declared source
(`rejected: other_label | other_sample | run:DIR`), both in the prompt variant's answer format."""

from __future__ import annotations

from typing import Any

from medharness.trainers.recipes.base import TrainContext, TrainerRecipe, trainer


@trainer("dpo")
class DPORecipe(TrainerRecipe):
    trl_config = "DPOConfig"
    data_format = "preference"
    description = "direct preference optimisation, gold vs a declared wrong answer (TRL DPOTrainer)"

    def build(self, ctx: TrainContext) -> Any:
        from trl import DPOTrainer

        return DPOTrainer(model=ctx.model, processing_class=ctx.processor, args=ctx.trl_args,
                          train_dataset=ctx.dataset, peft_config=ctx.peft_config, callbacks=ctx.callbacks)
