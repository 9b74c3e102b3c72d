"""`train --resume`: the checkpoint a run continues from, loaded whole or refused.

One naming: transformers writes a checkpoint under the names `from_pretrained` reads (Qwen2-VL: `visual.*`,
`model.layers.*`), while Trainer's own resume loads the file into the live model by raw name
(`model.visual.*`, `model.language_model.*`) and silently keeps the starting weights where the names differ.
So before Trainer resumes a full fine-tune, the checkpoint is read through the model's own `from_pretrained`
(its load report must show every tensor loaded and none left over) and copied into the trainer's model, which
was built on the starting weights so that a reference model TRL made from it (GRPO, DPO) is still the start.
A LoRA checkpoint (PEFT's names on both sides, loaded by Trainer) must hold exactly the adapter's tensors.
Trainer then restores the optimiser, scheduler, step, data position and RNG from the same folder; its
raw-name weight pass finds nothing new (a name it matches holds the tensor just copied from the same file),
so its missing/unexpected key warnings are dropped (`raw_reload_quiet`). DeepSpeed and FSDP resume from their
own state files, under the model's names.

A checkpoint counts once its `medharness.json` exists: the manifest is written after TRL has saved
everything else, so a folder a kill tore mid-save is passed over. A checkpoint at `max_steps` is not trained
again (Trainer would run one step past it when it falls inside an epoch): `final/` is its copy.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.checkpoints.lineage import MANIFEST_FILE, CheckpointManifest, read_manifest
from medharness.core.errors import ConfigError, DataError
from medharness.trainers.checkpoints import write_manifest

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
# What a checkpoint holds beyond a `final/` folder: Trainer's state (optimiser, scheduler, scaler, RNG, step),
# DeepSpeed's engine folders and FSDP's state files.
TRAINING_STATE = ("optimizer*", "scheduler*", "scaler*", "rng_state*", TRAINER_STATE, "global_step*",
                  "latest", "zero_to_fp32.py", "pytorch_model_fsdp*")
# Trainer's warnings after its raw-name weight load (transformers/trainer.py `_issue_warnings_after_load`).
RAW_RELOAD_WARNINGS = ("There were missing keys in the checkpoint model loaded",
                       "There were unexpected keys in the checkpoint model loaded")


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    step: int


def last_checkpoint(output: Path) -> Checkpoint | None:
    """The complete `checkpoint-<step>/` with the highest step (None: none yet); torn ones are logged."""
    found = sorted((int(m.group(1)), p) for p in output.iterdir()
                   if p.is_dir() and (m := CHECKPOINT.match(p.name)))
    for step, folder in reversed(found):
        if (folder / MANIFEST_FILE).is_file() and (folder / TRAINER_STATE).is_file():
            return Checkpoint(folder, step)
        log.warning("--resume: %s is incomplete (the run was stopped while saving it); passed over", folder)
    return None


def target_step(trl_args: Any, checkpoint: Checkpoint) -> int | None:
    """The step this run ends at: `max_steps`, or for a run counted in epochs the total the checkpoint's
    schedule recorded (None when the epochs changed since)."""
    if trl_args.max_steps > 0:
        return int(trl_args.max_steps)
    state = json.loads((checkpoint.folder / TRAINER_STATE).read_text(encoding="utf-8"))
    same = state.get("num_train_epochs") == trl_args.num_train_epochs
    return int(state["max_steps"]) if same and state.get("max_steps") else None


def is_done(trl_args: Any, checkpoint: Checkpoint) -> bool:
    """True when the checkpoint is at the run's last step; a checkpoint past it is refused."""
    end = target_step(trl_args, checkpoint)
    if end is not None and checkpoint.step > end:
        raise ConfigError(f"--resume: {checkpoint.folder} is at step {checkpoint.step}, past max_steps "
                          f"{end}: give --max-steps {checkpoint.step} or more")
    return end is not None and checkpoint.step == end


def check_load_report(folder: Path, report: dict[str, Any]) -> None:
    """Refuse a checkpoint `from_pretrained` did not load whole (its `output_loading_info` report)."""
    kinds = {"missing_keys": "left at their starting values", "unexpected_keys": "not in the model",
             "mismatched_keys": "of another shape", "error_msgs": "errors"}
    problems = [f"{len(items)} {label} (e.g. {min(map(str, items))})"
                for key, label in kinds.items() if (items := report.get(key))]
    if problems:
        raise DataError(f"--resume: checkpoint {folder} does not load every tensor of the model: "
                        f"{'; '.join(problems)}; resume from another checkpoint or start a new --output")


def load_full_checkpoint(model: Any, folder: Path) -> None:
    """Copy a full fine-tune's checkpoint into `model`, the trainer's (built on the starting weights, so a
    reference model TRL made from it stays the start), read through the model's own `from_pretrained`:
    every tensor loaded or refused."""
    loaded, report = type(model).from_pretrained(str(folder), dtype=model.dtype, output_loading_info=True)
    check_load_report(folder, report)
    copied = model.load_state_dict(loaded.state_dict(), strict=False)
    check_load_report(folder, {"missing_keys": copied.missing_keys,
                               "unexpected_keys": copied.unexpected_keys})


def check_adapter_checkpoint(model: Any, folder: Path) -> None:
    """Refuse a LoRA checkpoint whose tensors are not exactly the adapter's (before Trainer loads it)."""
    from peft import get_peft_model_state_dict
    from safetensors import safe_open

    file = folder / "adapter_model.safetensors"
    if not file.is_file():
        raise DataError(f"--resume: checkpoint {folder} has no adapter_model.safetensors (a LoRA run's "
                        "checkpoints hold the adapter)")
    with safe_open(str(file), framework="pt") as fh:
        saved = set(fh.keys())
    wanted = set(get_peft_model_state_dict(model))
    check_load_report(folder, {"missing_keys": wanted - saved, "unexpected_keys": saved - wanted})


class _DropRawReload(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(RAW_RELOAD_WARNINGS)


@contextmanager
def raw_reload_quiet() -> Iterator[None]:
    """Drop Trainer's key warnings of its raw-name reload while it runs (the model was already loaded whole
    from the same checkpoint, `load_full_checkpoint`)."""
    logger, drop = logging.getLogger("transformers.trainer"), _DropRawReload()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def final_from_checkpoint(checkpoint: Checkpoint, output: Path, manifest: CheckpointManifest) -> Path:
    """`OUTPUT/final/` as the checkpoint's model files (Trainer's state left out) and `manifest`, put in place
    whole; a complete `final/` already at that step stays as it is."""
    final = output / "final"
    done = read_manifest(final)
    if done is not None and done.step == checkpoint.step:
        return final
    staging = output / f".final.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint.folder, staging, ignore=shutil.ignore_patterns(*TRAINING_STATE, MANIFEST_FILE))
    write_manifest(staging, manifest)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final
