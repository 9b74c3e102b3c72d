"""Everything before `trainer.train()`, in the order that fails fastest on bad input: task and samples,
rewards (refused when they do not apply), gold/rejected answers, the processor and pixel budget, the dataset
and its pre-flight image-token check, the model (vision tower frozen where asked), TRL's config object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.backends.vlm_common import stop_token_ids, vision_token_ids
from medharness.core.dtypes import torch_dtype
from medharness.core.errors import BackendError, ConfigError, DataError
from medharness.core.torchvision_shim import ensure_torchvision_importable
from medharness.taskfiles.task import Task, load_task, recipe_for
from medharness.trainers.checkpoints import (
    Lineage,
    batch_sizes,
    check_lora_targets,
    freeze_vision,
    lora_config,
    manifest_callback,
)
from medharness.trainers.config import Layers, trl_args
from medharness.trainers.data import (
    ablated,
    attention_kernel,
    cap_prompts,
    check_image_tokens,
    pixel_budget,
    prompt_cap_callback,
    resize,
    rows_for,
    select_samples,
    to_dataset,
)
from medharness.trainers.logs import log_callback
from medharness.trainers.recipes.base import TrainContext, TrainerRecipe, recipe_class
from medharness.trainers.rewards import RewardSet, default_rewards
from medharness.trainers.schema import TrainConfig
from medharness.trainers.styles import assign_styles, style_tasks
from medharness.trainers.targets import gold_text, rejected_texts

log = logging.getLogger(__name__)


def load_train_task(config: TrainConfig) -> Task:
    overrides = {k: v for k, v in (("prompt", config.prompt), ("data_dir", config.data_dir)) if v}
    task = load_task(str(config.task), overrides)
    task.prompt_name  # noqa: B018 - an unknown prompt variant fails here
    return task


def check_gold_parses(task: Task, prompt: str, samples: list[Any]) -> None:
    """The gold answer written in the variant's format must read back through the variant's parser."""
    parser = recipe_for(task, prompt=prompt).parser
    for sample in samples:
        text = gold_text(task, prompt, sample)
        if parser(text, sample).value is None:
            raise DataError(f"task {task.name}, prompt '{prompt}': the gold answer of sample {sample.id} "
                            f"written as {text!r} does not parse with {parser.name}")


def load_model(config: TrainConfig, use_gpu: bool) -> tuple[Any, Any]:
    ensure_torchvision_importable()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if config.model is None:
        raise ConfigError("no base model: pass --model or set `model:` in the recipe config")
    dtype = torch_dtype(config.dtype, use_gpu, "dtype")
    try:
        processor = AutoProcessor.from_pretrained(config.model)
        model = AutoModelForImageTextToText.from_pretrained(
            config.model, dtype=dtype,
            attn_implementation=attention_kernel(config.attn_implementation, use_gpu))
    except Exception as exc:
        raise BackendError(f"cannot load model {config.model!r} for training: {exc}") from exc
    return model, processor


def suppressed_ids(model: Any, processor: Any) -> list[int]:
    tokenizer = getattr(processor, "tokenizer", processor)
    stops = stop_token_ids(model.generation_config.eos_token_id, tokenizer)
    return vision_token_ids(model.config, processor, tokenizer, model.get_output_embeddings().weight.shape[0],
                            exclude=stops)


@dataclass
class Prepared:
    config: TrainConfig
    layers: Layers
    recipe: TrainerRecipe
    ctx: TrainContext
    lineage: Lineage
    gold_means: dict[str, float | None]
    styles: dict[str, str] | None = None  # sample id -> prompt style (prompt_styles), written by run.py

    def batch_info(self) -> dict[str, Any]:
        """Batch sizes count completions in TRL (not prompts): record both."""
        return batch_sizes(self.ctx.trl_args)

    def reward_info(self) -> list[dict[str, Any]] | None:
        if self.ctx.rewards is None:
            return None
        r = self.ctx.rewards
        return [{"label": lab, "metric": s.metric, "args": s.args, "weight": w,
                 "gold_mean": self.gold_means[lab]}
                for lab, s, w in zip(r.labels, r.specs, r.weights)]

    def add_callbacks(self, output: Path, progress: Callable[[str], None] | None) -> None:
        self.ctx.callbacks[:0] = [log_callback(output / "logs.jsonl", progress),
                                  manifest_callback(self.ctx.processor, self.lineage, output)]


def check_ablation(config: TrainConfig, recipe: TrainerRecipe) -> None:
    if config.ablate == "labels" and recipe.data_format != "completion":
        raise ConfigError(f"ablate: labels shuffles the gold answers SFT trains on; recipe {config.recipe} "
                          "learns from rewards or preference pairs (use an image ablation: blank, noise, "
                          "shuffle)")


def prepare(config: TrainConfig, layers: Layers, output: Path) -> Prepared:
    recipe = recipe_class(config.recipe)()
    check_ablation(config, recipe)
    import torch

    use_gpu = torch.cuda.is_available()
    trl_args(config, layers, output, use_gpu)  # every TRL key and value checked before anything heavy
    task = load_train_task(config)
    prompt = task.prompt_name
    samples = select_samples(task, config)
    rewards, gold_means = None, dict[str, float | None]()
    if recipe.uses_rewards:
        specs = (config.rewards or recipe.default_rewards(task, prompt, config)
                 or default_rewards(task, prompt))
        rewards = RewardSet(task, prompt, specs, samples, completions_file=output / "completions.jsonl",
                            model=config.model)
        gold_means = rewards.check_applicable(samples, lambda s: gold_text(task, prompt, s))
    gold = None
    if recipe.data_format in ("completion", "preference"):
        check_gold_parses(task, prompt, samples)
        gold = lambda s: gold_text(task, prompt, s)
    rejected = rejected_texts(task, prompt, samples, config.rejected, config.seed) \
        if recipe.data_format == "preference" else None
    styles = None
    if config.prompt_styles:  # checked before the model loads
        styled = style_tasks(task, config.prompt_styles, prompt, config.data_dir)
        styles = (assign_styles(samples, config.prompt_styles, config.seed), styled)
    model, processor = load_model(config, use_gpu)
    kernel = str(getattr(model.config, "_attn_implementation", None) or config.attn_implementation)
    config = config.model_copy(update={"attn_implementation": kernel})  # train.json records the kernel used
    if config.lora is not None:
        check_lora_targets(model, config.lora)  # peft would say so only after the output folder exists
    budget = pixel_budget(processor, config)
    if config.ablate:
        log.warning("ablate: %s - a control run: it trains on replaced %s and is not meant to learn",
                    config.ablate, "answers" if config.ablate == "labels" else "images")
    images, gold = ablated(config.ablate, samples,
                           lambda s: [resize(task.open_image(ref), budget) for ref in s.images], gold,
                           config.seed)
    rows = rows_for(recipe.data_format, task, samples, images, gold, rejected, styles)
    settings = dict(config.trl)
    if rewards is not None:
        if "reward_weights" in settings:
            raise DataError("trl.reward_weights is set from the `rewards:` weights; remove it from trl:")
        settings.update(recipe.trl_injections(settings, rewards.weights, suppressed_ids(model, processor)))
    config = config.model_copy(update={"trl": settings})
    args = trl_args(config, layers, output, use_gpu)
    lengths: dict[str, int] = {}
    check_image_tokens(rows, processor,
                       getattr(args, "max_length", None) if recipe.data_format != "prompt" else None, lengths)
    rows, capped = cap_prompts(rows, lengths, config.samples.max_prompt_tokens, recipe.data_format)
    if config.lora is None and config.freeze_vision:
        log.info("froze %d vision-tower parameter tensors", freeze_vision(model))
    ids = [r["sample_id"] for r in rows]
    lineage = Lineage.create(config, layers.presets, args, ids, prompt)
    ctx = TrainContext(config=config, task=task, samples=samples, model=model, processor=processor,
                       trl_args=args, dataset=to_dataset(rows), output=output, rewards=rewards,
                       peft_config=lora_config(config.lora) if config.lora else None)
    if capped is not None:
        ctx.callbacks.append(prompt_cap_callback(output / "prompt_cap.json", capped))
    return Prepared(config, layers, recipe, ctx, lineage, gold_means, styles[0] if styles else None)
