"""Checkpoints: the vision-tower freeze, the LoRA config, and the `medharness.json` manifest (plus the
processor) written into every `checkpoint-<step>/` TRL saves and into `final/`.

The manifest is `medharness.checkpoints.lineage.CheckpointManifest`, the model the core reads back for
`trained_from`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medharness.backends.vlm_common import checkpoint_folder, weights_fingerprint
from medharness.checkpoints.lineage import (
    MANIFEST_FILE,
    CheckpointManifest,
    file_hash,
    manifest_path,
    read_manifest,
)
from medharness.core.atomic import replacing, write_text_atomic
from medharness.core.errors import ConfigError
from medharness.core.secrets import scrub_value
from medharness.core.versions import package_versions
from medharness.trainers.schema import LoraSpec, TrainConfig

log = logging.getLogger(__name__)

# Module names of vision towers across VLM families (Qwen2-VL/2.5-VL `visual`, LLaVA `vision_tower`, ...).
VISION_PATTERN = re.compile(r"(^|\.)(visual|vision_tower|vision_model|vision_encoder|image_encoder)(\.|$)")
VISION_REGEX = r".*(^|\.)(visual|vision_tower|vision_model|vision_encoder|image_encoder)\..*"
# the manifest's `versions`
PACKAGES = ("medharness", "trl", "transformers", "peft", "torch", "datasets", "accelerate")


def is_vision(name: str) -> bool:
    return VISION_PATTERN.search(name) is not None


def freeze_vision(model: Any) -> int:
    """Turn off gradients for every vision-tower parameter (GRPOTrainer has no switch); returns how many."""
    frozen = 0
    for name, param in model.named_parameters():
        if is_vision(name):
            param.requires_grad_(False)
            frozen += 1
    if not frozen:
        log.warning("freeze_vision: found no vision-tower parameters (looked for %s)", VISION_PATTERN.pattern)
    return frozen


def check_vision_frozen(model: Any) -> int:
    """Raise when any vision-tower parameter is trainable (after LoRA wrapping or freezing); returns how many
    trainable parameter tensors the model has."""
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    vision = [name for name in trainable if is_vision(name)]
    if vision:
        raise ConfigError(f"freeze_vision is set but {len(vision)} vision-tower parameter tensors are "
                          f"trainable (e.g. {vision[0]}): LoRA target_modules or freezing reached the vision "
                          "tower")
    return len(trainable)


def lora_config(spec: LoraSpec) -> Any:
    """PEFT's `LoraConfig`; with `freeze_vision` the adapter is kept off the vision tower
    (exclude_modules)."""
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=list(spec.target_modules), bias="none",
                      exclude_modules=VISION_REGEX if spec.freeze_vision else None)


def check_lora_targets(model: Any, spec: LoraSpec) -> int:
    """Refuse `target_modules` that match no module of the loaded model (peft's rule for a list: a module's
    name is a target or ends with `.target`; the vision tower is left out under `freeze_vision`), which peft
    reports only inside the trainer, after the output folder exists. Returns how many modules match."""
    exclude = re.compile(VISION_REGEX) if spec.freeze_vision else None
    found = [name for name, _ in model.named_modules()
             if any(name == t or name.endswith(f".{t}") for t in spec.target_modules)
             and not (exclude and exclude.fullmatch(name))]
    if not found:
        linear = sorted({name.rpartition(".")[2] for name, module in model.named_modules()
                         if type(module).__name__ == "Linear" and not (exclude and exclude.fullmatch(name))})
        raise ConfigError(f"lora.target_modules {list(spec.target_modules)} match no module of the model"
                          + (" outside its vision tower (freeze_vision)" if exclude else "")
                          + f"; its linear layers are named {', '.join(linear) or '(none)'}")
    return len(found)


def samples_hash(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def batch_sizes(trl_args: Any) -> dict[str, Any]:
    """Batch sizes per optimiser step: TRL counts completions (GRPO: prompts x num_generations); both
    recorded."""
    a = trl_args
    completions = a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size
    generations = getattr(a, "num_generations", None)
    return {"per_device_train_batch_size": a.per_device_train_batch_size,
            "gradient_accumulation_steps": a.gradient_accumulation_steps, "world_size": a.world_size,
            "completions_per_step": completions if generations else None, "num_generations": generations,
            "prompts_per_step": completions // generations if generations else completions}


def json_safe(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


@dataclass
class Lineage:
    """What every manifest of one training run shares (everything but the step)."""

    config: TrainConfig
    presets: list[str]
    trl_settings: dict[str, Any]  # TrainingArguments.to_dict()
    sample_ids: list[str]
    prompt: str
    base_fingerprint: str | None = None
    parent: str | None = None
    parent_path: str | None = None
    batch: dict[str, Any] | None = None

    @classmethod
    def create(cls, config: TrainConfig, presets: list[str], trl_args: Any, sample_ids: list[str],
               prompt: str) -> Lineage:
        assert config.model is not None
        folder = checkpoint_folder(config.model)
        fingerprint = weights_fingerprint(folder) if folder is not None else None
        parent = read_manifest(folder) if folder is not None else None
        return cls(config=config, presets=presets, trl_settings=json_safe(trl_args.to_dict()),
                   sample_ids=sample_ids, prompt=prompt, base_fingerprint=fingerprint,
                   batch=batch_sizes(trl_args),
                   parent=file_hash(manifest_path(folder)) if parent is not None and folder else None,
                   parent_path=str(folder.resolve()) if parent is not None and folder else None)

    def resolved(self) -> dict[str, Any]:
        """The fully resolved config as recorded (train.json, manifests): medharness settings and every TRL
        setting, credentials scrubbed (`http://user:KEY@host` as `http://***@host`; TRL is given the real
        value)."""
        return scrub_value({**json_safe(self.config.model_dump(by_alias=True, exclude={"trl"})),
                            "trl": self.trl_settings})

    def manifest(self, step: int | None) -> CheckpointManifest:
        c = self.config
        return CheckpointManifest(
            base_model=str(c.model), base_fingerprint=self.base_fingerprint, recipe=c.recipe,
            preset="+".join(self.presets) or None, task=str(c.task), prompt=self.prompt,
            config=self.resolved(), train_samples_hash=samples_hash(self.sample_ids),
            n_train_samples=len(self.sample_ids), seed=c.seed,
            step=step, adapter=c.lora is not None, attn_implementation=c.attn_implementation,
            parent=self.parent, parent_path=self.parent_path, batch=self.batch,
            versions=package_versions(PACKAGES),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_manifest(folder: Path, manifest: CheckpointManifest) -> Path:
    path = folder / MANIFEST_FILE
    write_text_atomic(path, manifest.model_dump_json(indent=1) + "\n")
    return path


def finish_checkpoint(folder: Path, processor: Any, lineage: Lineage, step: int | None,
                      args: Any = None) -> None:
    """Make a saved folder self-contained for `run`: the processor beside the weights, and the manifest;
    TRL's pickle of its settings (`training_args.bin`) without credentials (`scrub_training_args`)."""
    if not (folder / "processor_config.json").exists() and not (folder / "preprocessor_config.json").exists():
        processor.save_pretrained(folder)
    write_manifest(folder, lineage.manifest(step))
    if args is not None:
        scrub_training_args(folder, args)


TRAINING_ARGS_FILE = "training_args.bin"  # transformers' TRAINING_ARGS_NAME: the Trainer's pickle of `args`


def scrub_training_args(folder: Path, args: Any) -> bool:
    """Rewrite `folder/training_args.bin` (transformers pickles the trainer's whole config there, for the
    record; resuming never reads it) with every credential scrubbed, as train.json records them: TRL keeps the
    real values in memory (`-C trl.vllm_server_base_url=http://user:KEY@host` still reaches the server).
    Untouched where no setting holds one. True where the file was rewritten."""
    import copy
    import dataclasses

    path = folder / TRAINING_ARGS_FILE
    if not path.is_file() or not dataclasses.is_dataclass(args):
        return False
    changed = {}
    for field in dataclasses.fields(args):
        value = getattr(args, field.name, None)
        if not isinstance(value, (str, list, tuple, dict)):
            continue
        clean_value = scrub_value(value)
        if json.dumps(clean_value, default=str) != json.dumps(value, default=str):  # tuples dump as lists
            changed[field.name] = tuple(clean_value) if isinstance(value, tuple) else clean_value
    if not changed:
        return False
    import torch

    clean = copy.copy(args)  # a shallow copy: no __post_init__ (which would set up devices again)
    for name, value in changed.items():
        object.__setattr__(clean, name, value)
    with replacing(path) as tmp:
        torch.save(clean, tmp)
    return True


def manifest_callback(processor: Any, lineage: Lineage, output: Path) -> Any:
    """A TrainerCallback finishing each `checkpoint-<step>/` right after TRL saves it."""
    from transformers import TrainerCallback

    class ManifestCallback(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            folder = output / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                finish_checkpoint(folder, processor, lineage, state.global_step, args)

    return ManifestCallback()


def model_card(manifest: CheckpointManifest, final: Path) -> str:
    """README.md of a trained folder, from its manifest: what it was trained from, how, on what, and how to
    score it. (TRL's own draft names no base when training started from a local folder.)"""
    hub = not Path(manifest.base_model).exists()
    front = ["---", "library_name: transformers", *([f"base_model: {manifest.base_model}"] if hub else []),
             "tags: [medharness, trl, " + manifest.recipe + "]", "---", ""]
    base = f"[{manifest.base_model}](https://huggingface.co/{manifest.base_model})" if hub else \
        f"the local model `{manifest.base_model}`"
    kind = "A LoRA adapter on" if manifest.adapter else "A fine-tuned version of"
    body = [f"# {final.parent.name}", "",
            f"{kind} {base}, trained by medharness {manifest.versions.get('medharness', '')} with TRL "
            f"{manifest.versions.get('trl', '')}: recipe `{manifest.recipe}`"
            + (f" (presets `{manifest.preset}`)" if manifest.preset else "")
            + f", task `{manifest.task}`" + (f" (prompt `{manifest.prompt}`)" if manifest.prompt else "")
            + f", {manifest.n_train_samples} training samples (ids hash `{manifest.train_samples_hash}`), "
            f"seed {manifest.seed}, {manifest.step} optimiser steps.", "",
            *([f"**A control run** (`ablate: {manifest.config['ablate']}`): trained on replaced "
               + ("answers" if manifest.config["ablate"] == "labels" else "images")
               + ", so that it cannot learn the task; it is not a model to use.", ""]
              if manifest.config.get("ablate") else []),
            "Score it with the task's own parser and metrics:", "",
            "```bash", f"medharness run --model {final} --tasks {manifest.task}", "```", "",
            f"Every setting (the recipe config, each TRL argument, package versions): `{MANIFEST_FILE}`."]
    return "\n".join(front + body) + "\n"


def save_final(trainer: Any, processor: Any, lineage: Lineage, output: Path) -> Path:
    """`OUTPUT/final/`: full weights or the LoRA adapter folder, the processor, the manifest and a model card
    (also OUTPUT/README.md, in place of TRL's draft)."""
    final = output / "final"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        scrub_training_args(final, trainer.args)
        processor.save_pretrained(final)
        manifest = lineage.manifest(trainer.state.global_step)
        write_manifest(final, manifest)
        card = model_card(manifest, final.resolve())
        for folder in (final, output):
            write_text_atomic(folder / "README.md", card)
    return final
