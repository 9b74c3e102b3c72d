"""What the local VLM backends (`hf`, `vllm`) share: the chat-message conversion, the image-count check, the
prompt rendering, the special token ids (stop ids, vision placeholders), the checkpoint fingerprint and the
PEFT adapter folders (`adapter_config.json`) that both serve on their base model.

Both backends render a request's prompt with the model's own HF chat template from the same messages, stop on
the same ids and suppress the same placeholder tokens: that is what makes their greedy answers comparable.
Imports neither torch nor transformers: the callers pass their loaded config / processor / tokenizer in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.backends.base import Request
from medharness.checkpoints.lineage import read_manifest
from medharness.core.errors import ConfigError
from medharness.core.records import Prompt

# Token ids a VLM must never generate: its image/video/vision placeholders (config attribute names vary).
VISION_ID_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index",
                   "vision_start_token_id", "vision_end_token_id", "vision_token_id")
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_pad|>", "<|vision_start|>", "<|vision_end|>")

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SMALL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
_CHUNK = 1 << 20


# -- checkpoints --------------------------------------------------------------------------------------------

def weights_fingerprint(folder: Path) -> str:
    """Short sha256 over a checkpoint folder: config files in full, and each weight file's name, size and
    first + last MB. Cheap on multi-GB checkpoints, yet changes whenever the weights are rewritten."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name in _SMALL_FILES:
            digest.update(f"{path.name}\0".encode() + path.read_bytes())
        elif path.suffix in _WEIGHT_SUFFIXES:
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            with path.open("rb") as fh:
                digest.update(fh.read(_CHUNK))
                if size > _CHUNK:
                    fh.seek(max(_CHUNK, size - _CHUNK))
                    digest.update(fh.read(_CHUNK))
    return digest.hexdigest()[:12]


def hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model id, if it is in the local cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an id that is not a valid repo name, an unreadable cache, ...
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def checkpoint_folder(source: str) -> Path | None:
    """The folder holding a model's files: `source` itself when it is a directory, else its hub cache
    snapshot; None when neither is here."""
    return Path(source) if Path(source).is_dir() else hub_snapshot(source)


# -- PEFT adapter folders ---------------------------------------------------------------------------------

ADAPTER_CONFIG = "adapter_config.json"
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json")


@dataclass(frozen=True)
class AdapterFolder:
    """A PEFT adapter folder given as `--model`, resolved onto the base model it was trained on."""

    path: Path  # the adapter folder (absolute)
    base: str  # the base model: a local folder (absolute) or a hub id
    config: dict[str, Any]  # adapter_config.json
    has_processor: bool  # the adapter folder carries its own processor / tokenizer files

    @property
    def processor_source(self) -> str:
        return str(self.path) if self.has_processor else self.base


def is_adapter_folder(model: str | Path) -> bool:
    """A local folder holding `adapter_config.json` (a PEFT adapter, not a full model)."""
    return (Path(model).expanduser() / ADAPTER_CONFIG).is_file()


def adapter_fingerprint(folder: Path) -> str:
    """Short sha256 of a PEFT adapter folder: its adapter_config.json in full (rank, alpha, targets) plus the
    weights fingerprint of its weight files (`weights_fingerprint`)."""
    config = folder / ADAPTER_CONFIG
    digest = hashlib.sha256(config.read_bytes() if config.is_file() else b"")
    digest.update(weights_fingerprint(folder).encode())
    return digest.hexdigest()[:12]


def _local_or_id(ref: str, relative_to: Path) -> str | None:
    """A base reference as a usable source: an existing folder (absolute), else the string as a hub id when
    it looks like one (not a path that is missing here), else None."""
    for candidate in (Path(ref).expanduser(), relative_to / ref):
        if candidate.is_dir():
            return str(candidate.resolve())
    looks_like_path = ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref
    return None if looks_like_path else ref


def resolve_adapter(model: str | Path, base: str | None = None,
                    base_flag: str = "--backend-option base=PATH_OR_HUB_ID") -> AdapterFolder:
    """The adapter folder `model` and its base: `base` when given; else the adapter config's
    `base_model_name_or_path`, else the `base_model` of its `medharness.json` manifest (the first of them
    that is a folder here or a hub id). A base that cannot be found is a ConfigError naming what was tried
    and the caller's option that gives one (`base_flag`)."""
    folder = Path(model).expanduser().resolve()
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder}: unreadable {ADAPTER_CONFIG}: {exc}") from None
    if not any(folder.glob("adapter_model.*")):
        raise ConfigError(f"{folder} has {ADAPTER_CONFIG} but no adapter_model.safetensors / .bin")
    manifest = read_manifest(folder)
    tried: list[str] = []
    if base:
        candidates = [base]
    else:
        candidates = [c for c in (config.get("base_model_name_or_path"),
                                  manifest.base_model if manifest else None) if c]
    for ref in candidates:
        source = _local_or_id(str(ref), folder)
        if source is not None:
            has_processor = any((folder / name).is_file() for name in PROCESSOR_FILES)
            return AdapterFolder(path=folder, base=source, config=config, has_processor=has_processor)
        tried.append(str(ref))
    detail = f"tried {', '.join(tried)} (not found here)" if tried else \
        "neither its adapter_config.json (base_model_name_or_path) nor a medharness.json manifest names one"
    raise ConfigError(f"cannot find the base model of adapter {folder}: {detail}; pass {base_flag}")


# -- prompts ------------------------------------------------------------------------------------------------

def hf_chat_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """medharness messages -> HF chat messages; images become `{"type": "image"}` placeholders."""
    return [{"role": m.role,
             "content": [{"type": "image"} if p.type == "image" else {"type": "text", "text": p.text or ""}
                         for p in m.content]}
            for m in prompt.messages]


def n_image_parts(prompt: Prompt) -> int:
    """How many image parts the prompt's messages hold (each must get one of the request's images)."""
    return sum(1 for m in prompt.messages for p in m.content if p.type == "image")


def image_count_error(request: Request) -> str | None:
    """Why a request cannot run (its prompt's image parts and its images differ in number), or None."""
    n_parts = n_image_parts(request.prompt)
    if n_parts != len(request.images):
        return f"prompt has {n_parts} image parts but {len(request.images)} images"
    return None


def chat_template_owner(processor: Any) -> Any:
    """The object whose chat template renders prompts: the processor when it has one, else its tokenizer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    return processor if getattr(processor, "chat_template", None) else tokenizer


def render_prompt(template_owner: Any, prompt: Prompt) -> str:
    """The prompt as the model's chat template writes it, ready for the assistant's answer."""
    return template_owner.apply_chat_template(hf_chat_messages(prompt), tokenize=False,
                                              add_generation_prompt=True)


# -- special token ids --------------------------------------------------------------------------------------

def stop_token_ids(generation_eos: int | list[int] | None, tokenizer: Any) -> set[int]:
    """The ids that end an answer: the generation config's `eos_token_id` (one id or a list) plus the
    tokenizer's eos id."""
    ids = set(generation_eos if isinstance(generation_eos, list) else
              [generation_eos] if generation_eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def vision_token_ids(config: Any, processor: Any, tokenizer: Any, vocab_size: int,
                     exclude: Collection[int] = ()) -> list[int]:
    """The image/video placeholder ids a VLM must never generate, sorted: the ids its config names (top level
    and `text_config`, `VISION_ID_ATTRS`), the `VISION_TOKENS` in its vocabulary and the processor's
    `image_token` / `video_token`; only ids below `vocab_size` (the output layer's rows), none in `exclude`
    (the stop ids)."""
    configs = (config, getattr(config, "text_config", None))
    ids = {getattr(c, a, None) for c in configs if c is not None for a in VISION_ID_ATTRS}
    vocab = tokenizer.get_vocab()
    ids |= {vocab.get(t) for t in VISION_TOKENS}
    for attr in ("image_token", "video_token"):
        token = getattr(processor, attr, None)
        ids.add(vocab.get(token) if isinstance(token, str) else None)
    return sorted(i for i in ids if isinstance(i, int) and 0 <= i < vocab_size and i not in exclude)


def check_attn_implementation(name: str, who: str = "hf backend") -> None:
    """Refuse an attention kernel whose package is missing with a ConfigError naming it, before any model
    loads (not a transformers traceback). The hf backend and the trainers both ask here."""
    import importlib.util

    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(f"{who}: attn_implementation=flash_attention_2 needs the flash_attn package "
                          "(pip install flash-attn; CUDA only); use sdpa (the default) or eager")
    if name == "flash_attention_3" and importlib.util.find_spec("flash_attn_interface") is None:
        raise ConfigError(f"{who}: attn_implementation=flash_attention_3 needs flash_attn_interface "
                          "(FlashAttention 3, Hopper GPUs); use sdpa (the default) or eager")
