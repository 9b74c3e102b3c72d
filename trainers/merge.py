"""`medharness merge ADAPTER_DIR --output DIR`: a LoRA adapter folder -> a full model folder.

The base (resolved as the `hf` backend resolves it: `--base`, else the adapter's `base_model_name_or_path`,
else its manifest's `base_model`) is loaded, the adapter merged into its weights (`merge_and_unload`), and the
result saved with its processor (the adapter's own when it has one, else the base's) and generation config.
The adapter's `medharness.json` manifest is copied with `adapter: false`, `parent` = the adapter manifest's
hash and `parent_path` = the adapter folder, so `run --model DIR` records where the merged weights came from.
An adapter without a manifest merges too (the output then has no manifest: its lineage reads "unknown").
torch, transformers and peft are imported only when a merge runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from medharness.core.atomic import write_json_atomic
from medharness.core.dtypes import DTYPE_CHOICES, canonical_dtype
from medharness.core.errors import ConfigError

log = logging.getLogger(__name__)



def merged_manifest(adapter_dir: Path) -> dict[str, Any] | None:
    """The manifest a merged folder gets: the adapter's own with `adapter: false` and the adapter recorded as
    its parent; None when the adapter folder has no manifest."""
    from medharness.checkpoints.lineage import file_hash, manifest_path, read_manifest

    manifest = read_manifest(adapter_dir)
    if manifest is None:
        return None
    return manifest.model_copy(update={
        "adapter": False, "parent": file_hash(manifest_path(adapter_dir)),
        "parent_path": str(adapter_dir.resolve())}).model_dump(mode="json")


def merge_adapter(adapter_dir: Path | str, output: Path | str, base: str | None = None,
                  dtype: str = "auto") -> Path:
    """Merge the LoRA adapter in `adapter_dir` into its base and save a full HF model folder to `output`."""

    from medharness.backends.vlm_common import is_adapter_folder, resolve_adapter
    from medharness.checkpoints.lineage import manifest_path

    adapter_dir, output = Path(adapter_dir), Path(output)
    if not is_adapter_folder(adapter_dir):
        raise ConfigError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json)")
    dtype = canonical_dtype(dtype, "merge")
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"merge: {output} already exists and is not empty; choose another --output")
    adapter = resolve_adapter(adapter_dir, base, base_flag="--base PATH_OR_HUB_ID")

    from medharness.core.torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    net = AutoModelForImageTextToText.from_pretrained(adapter.base, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(net, str(adapter.path)).merge_and_unload()
    output.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output)
    AutoProcessor.from_pretrained(adapter.processor_source).save_pretrained(output)
    manifest = merged_manifest(adapter.path)
    if manifest is not None:
        write_json_atomic(manifest_path(output), manifest)
    else:
        log.warning("%s has no medharness.json manifest: %s gets none (lineage unknown)", adapter.path,
                    output)
    log.info("merged %s onto %s -> %s", adapter.path, adapter.base, output)
    return output


# -- the `medharness merge` command ----------------------------------------------------------------------

def add_commands(sub: argparse._SubParsersAction) -> dict[str, Any]:
    p = sub.add_parser("merge",
                       help="merge a LoRA adapter folder into its base: a full model folder for run/vllm",
                       description="Load the adapter's base, merge the adapter (merge_and_unload), save the "
                                   "weights, processor and a manifest (adapter: false, parent recorded).")
    p.add_argument("adapter_dir", type=Path, help="a PEFT adapter folder (adapter_config.json)")
    p.add_argument("--output", type=Path, required=True, help="the full model folder to write")
    p.add_argument("--base", help="the base model (default: the adapter config's or manifest's base)")
    p.add_argument("--dtype", default="auto", choices=list(DTYPE_CHOICES),
                   help="weights dtype of the merged folder (default auto: the base's)")
    return {"merge": cmd_merge}


def cmd_merge(args: argparse.Namespace) -> int:
    path = merge_adapter(args.adapter_dir, args.output, base=args.base, dtype=args.dtype)
    print(f"merged {args.adapter_dir} into a full model folder: {path}")
    return 0
