"""Checkpoint lineage: the `medharness.json` manifest a trainer writes beside a checkpoint, and the
`trained_from` record a run log keeps for the model it evaluated.

The core only reads manifests (`trainers/` writes them), so `run --model CKPT` records where a checkpoint came
from without importing any training code. A local model folder without a manifest evaluates as usual, with
lineage "unknown"; a hub id or a baseline has no lineage at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from medharness.core.errors import DataError
from medharness.core.records import Strict, TrainedFrom

MANIFEST_FILE = "medharness.json"
MANIFEST_SCHEMA = 1


class CheckpointManifest(Strict):
    """What a trainer writes into every checkpoint folder it saves (`medharness.json`)."""

    schema_version: int = MANIFEST_SCHEMA
    base_model: str  # what training started from (hub id or path)
    base_fingerprint: str | None = None  # the base weights' content hash, where the trainer computed it
    recipe: str  # registered trainer name (sft, dpo, grpo, ...)
    preset: str | None = None
    task: str
    prompt: str | None = None  # the task's prompt variant the model was trained on
    config: dict[str, Any]  # the fully resolved recipe config, every TRL setting included
    train_samples_hash: str  # sha256 of the sorted training sample ids
    n_train_samples: int
    seed: int
    step: int | None = None  # the optimiser step this checkpoint was saved at
    adapter: bool = False  # True: a LoRA adapter folder on `base_model`
    attn_implementation: str = "sdpa"
    parent: str | None = None  # the parent checkpoint's manifest hash (multi-stage recipes)
    parent_path: str | None = None
    # per optimiser step: completions and prompts (TRL counts completions)
    batch: dict[str, Any] | None = None
    versions: dict[str, str] = Field(default_factory=dict)  # trl, transformers, peft, torch, medharness
    created: str = ""


def manifest_path(folder: Path) -> Path:
    return folder / MANIFEST_FILE


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read_manifest(folder: Path) -> CheckpointManifest | None:
    """The manifest of a checkpoint folder, None when it has none; a broken one is a DataError."""
    file = manifest_path(folder)
    if not file.is_file():
        return None
    try:
        return CheckpointManifest.model_validate(json.loads(file.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: not a medharness checkpoint manifest: {exc}") from None


def trained_from(model: str) -> TrainedFrom | None:
    """Lineage of `--model`: None for a hub id, a baseline or a predictions file; `known=False` for a local
    model folder without a manifest."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    manifest = read_manifest(folder)
    if manifest is None:
        return TrainedFrom(checkpoint=str(folder.resolve()), known=False)
    return TrainedFrom(
        checkpoint=str(folder.resolve()), known=True, base_model=manifest.base_model, recipe=manifest.recipe,
        preset=manifest.preset, task=manifest.task, step=manifest.step, seed=manifest.seed,
        adapter=manifest.adapter, manifest_hash=file_hash(manifest_path(folder)), parent=manifest.parent)
