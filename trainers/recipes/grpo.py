"""`grpo`: TRL's GRPOTrainer, the rewards being the task's own metrics. Dr.GRPO is the `dr_grpo` preset
(`loss_type: dr_grpo`, `scale_rewards: none`); LoRA is the `lora:` option (presets `grpo_lora`), its rollouts
generated with the adapters merged (trainers/rollouts.py)."""

from __future__ import annotations

import copy
import logging
from typing import Any

from medharness.trainers.recipes.base import TrainContext, TrainerRecipe, trainer
from medharness.trainers.rollouts import merge_for_rollouts

log = logging.getLogger(__name__)


@trainer("grpo")
class GRPORecipe(TrainerRecipe):
    trl_config = "GRPOConfig"
    data_format = "prompt"
    uses_rewards = True
    description = "Group Relative Policy Optimisation (TRL GRPOTrainer); dr_grpo is a preset"

    @staticmethod
    def trl_injections(settings: dict[str, Any], reward_weights: list[float],
                       suppress: list[int]) -> dict[str, Any]:
        """Settings medharness derives: the reward weights, and the vision placeholder ids a random-weight
        model must never sample (HF generation: `suppress_tokens`; vLLM: a -100 `logit_bias`)."""
        kwargs = dict(settings.get("generation_kwargs") or {})
        if settings.get("use_vllm"):
            kwargs.setdefault("logit_bias", {int(i): -100.0 for i in suppress})
        else:
            kwargs["suppress_tokens"] = sorted(set(kwargs.get("suppress_tokens") or []) | set(suppress))
        return {"reward_weights": reward_weights, "generation_kwargs": kwargs or None}

    @staticmethod
    def reward_args(ctx: TrainContext) -> Any:
        """TRL's arguments with the reward functions' weights: under `sum_then_normalize` each component is a
        zero-weight (logged) function and `total` (weight 1) sums the components present with renormalised
        weights, so an unscored component is left out, not counted 0 (trainers/rewards.py)."""
        assert ctx.rewards is not None
        ctx.rewards.aggregation = ctx.trl_args.multi_objective_aggregation
        args = copy.copy(ctx.trl_args)
        args.reward_weights = ctx.rewards.trl_weights()
        return args

    def build(self, ctx: TrainContext) -> Any:
        from accelerate.utils import set_seed
        from trl import GRPOTrainer

        assert ctx.rewards is not None
        args = self.reward_args(ctx)
        built = GRPOTrainer(model=ctx.model, processing_class=ctx.processor,
                            reward_funcs=list[Any](ctx.rewards.functions()),
                            args=args, train_dataset=ctx.dataset, peft_config=ctx.peft_config,
                            callbacks=ctx.callbacks)
        lora = ctx.config.lora
        if lora is not None and lora.merge_for_rollouts and not ctx.trl_args.use_vllm \
                and not (built.is_deepspeed_enabled or built.is_fsdp_enabled):  # sharded weights: not merged
            log.info("LoRA rollouts: generated with the adapters of %d layers merged "
                     "(lora.merge_for_rollouts)", merge_for_rollouts(built.model))
        if ctx.trl_args.use_vllm:
            # trl 1.16 seeds the colocated vLLM engine with `process_index // tensor_parallel_size`, which
            # resets the global RNG the sampler draws from: re-seed from the run seed so seeds vary the
            # rollouts.
            set_seed(ctx.trl_args.seed, device_specific=True)
        return built
