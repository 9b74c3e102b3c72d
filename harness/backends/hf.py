"""`hf`: any chat vision-language model that loads with `AutoProcessor` + `AutoModelForImageTextToText`.

Options: `device` ("auto" = cuda when available, else cpu), `dtype` ("auto" = bfloat16 on cuda, float32 on
cpu), `batch_size` (8), `attn_implementation` ("sdpa"; `flash_attention_2` needs the `flash_attn` package; the
kernel actually used is `backend.attn_implementation`), `base` (the base model of a LoRA adapter folder),
`merge_adapter` (True).

A PEFT adapter folder (`adapter_config.json`) given as the model loads on its base: `base`, else the adapter
config's `base_model_name_or_path`, else the `base_model` of its `medharness.json` manifest. The processor
comes from the adapter folder when it has one, else from the base. The adapter is merged into the weights in
memory (`merge_adapter=False` keeps the PEFT wrapper), which gives the same greedy text as the folder
`medharness merge` writes. The fingerprint names base and adapter with both content hashes. Requests are
grouped by their generation settings and run in left-padded batches; temperature 0 is greedy decoding. When a
batch fails, it is retried one request at a time so that only the failing request gets a
`Generation(error=...)`. This module imports torch and transformers; the registry imports it only when "hf" is
used.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.backends.base import Backend, Request, backend
from medharness.backends.vlm_common import (
    AdapterFolder,
    adapter_fingerprint,
    chat_template_owner,
    check_attn_implementation,
    checkpoint_folder,
    image_count_error,
    is_adapter_folder,
    render_prompt,
    resolve_adapter,
    stop_token_ids,
    vision_token_ids,
    weights_fingerprint,
)
from medharness.core.dtypes import torch_dtype
from medharness.core.errors import BackendError, ConfigError
from medharness.core.records import Generation, GenerationSettings
from medharness.core.torchvision_shim import ensure_torchvision_importable

ensure_torchvision_importable()  # before transformers pulls torchvision in

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

log = logging.getLogger(__name__)

def _resolve(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return dev, torch_dtype(dtype, dev.type == "cuda", "hf backend")


def _with_adapter(net: Any, adapter: AdapterFolder, merge: bool) -> Any:
    """The base model with the PEFT adapter loaded (and merged into its weights when `merge`)."""
    from peft import PeftModel

    wrapped = PeftModel.from_pretrained(net, str(adapter.path), is_trainable=False)
    return wrapped.merge_and_unload() if merge else wrapped


@backend("hf")
class HFBackend(Backend):
    """`--backend hf --model PATH_OR_HUB_ID [--device D --dtype T]`: local transformers inference."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 attn_implementation: str = "sdpa", base: str | None = None, merge_adapter: bool = True,
                 **options: Any) -> None:
        super().__init__(model, **options)
        if options:
            log.warning("hf backend ignores unknown options: %s", ", ".join(sorted(options)))
        if int(batch_size) < 1:
            raise ConfigError(f"hf backend: batch_size must be >= 1, got {batch_size}")
        check_attn_implementation(attn_implementation)
        self.batch_size = int(batch_size)
        self.device, self.dtype = _resolve(device, dtype)
        local = Path(model).expanduser()
        self.adapter: AdapterFolder | None = None
        if is_adapter_folder(local):
            self.adapter = resolve_adapter(local, base)
            self.source = self.adapter.base
        else:
            if base:
                log.warning("hf backend: base=%s ignored: %s is not an adapter folder", base, model)
            self.source = str(local.resolve()) if local.exists() else model
        try:
            self.processor = AutoProcessor.from_pretrained(
                self.adapter.processor_source if self.adapter else self.source)
            self.net = AutoModelForImageTextToText.from_pretrained(
                self.source, dtype=self.dtype, attn_implementation=attn_implementation)
            if self.adapter is not None:
                self.net = _with_adapter(self.net, self.adapter, merge=bool(merge_adapter))
            # transformers types `.to` loosely
            self.net = self.net.to(self.device).eval()  # type: ignore[arg-type]
        except Exception as exc:  # missing files, unsupported architecture, offline hub id, ...
            raise BackendError(f"cannot load hf model {model!r}: {exc}") from exc
        self.attn_implementation = str(getattr(self.net.config, "_attn_implementation", None)
                                       or attn_implementation)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._template_owner = chat_template_owner(self.processor)
        self._eos_ids = stop_token_ids(self.net.generation_config.eos_token_id, self.tokenizer)
        self._suppress = vision_token_ids(self.net.config, self.processor, self.tokenizer,
                                          vocab_size=self.net.get_output_embeddings().weight.shape[0],
                                          exclude=self._eos_ids)
        self._fingerprint = f"hf:{self.source}@{self._content_hash()}"
        if self.adapter is not None:  # base and adapter weights: the response cache never mixes them
            self._fingerprint += f"+lora:{self.adapter.path}@{adapter_fingerprint(self.adapter.path)}"
        log.info("loaded %s on %s (%s, attention %s), %d params", self._fingerprint, self.device, self.dtype,
                 self.attn_implementation, sum(p.numel() for p in self.net.parameters()))

    # -- identity -------------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _content_hash(self) -> str:
        folder = checkpoint_folder(self.source)
        if folder is not None:
            return weights_fingerprint(folder)
        return str(getattr(self.net.config, "_commit_hash", None) or "unknown")[:12]

    # -- generation -----------------------------------------------------------------------------------

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Answer every request, in order; requests sharing settings share batches."""
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[GenerationSettings, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            problem = image_count_error(req)
            if problem is not None:
                results[i] = self._error(req, problem)
            else:
                groups[req.prompt.settings].append(i)
        for settings, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start: start + self.batch_size]
                for i, gen in zip(chunk, self._run_isolated([requests[i] for i in chunk], settings)):
                    results[i] = gen
        return [g for g in results if g is not None]

    def _run_isolated(self, batch: list[Request], settings: GenerationSettings) -> list[Generation]:
        """The batch at once; if that fails, one request at a time, each failure its own error."""
        try:
            return self._run_batch(batch, settings)
        except Exception as exc:  # noqa: BLE001 - any failure of a batch is retried per request
            self._free_memory()
            if len(batch) == 1:
                log.warning("hf generation failed for %s: %s", batch[0].prompt.sample_id, exc)
                return [self._error(batch[0], f"{type(exc).__name__}: {exc}")]
            log.warning("hf batch of %d failed (%s: %s); retrying one at a time", len(batch),
                        type(exc).__name__, exc)
            return [g for req in batch for g in self._run_isolated([req], settings)]

    def _run_batch(self, batch: list[Request], settings: GenerationSettings) -> list[Generation]:
        texts = [render_prompt(self._template_owner, r.prompt) for r in batch]
        images = [img for r in batch for img in r.images]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        for key, value in inputs.items():  # pixel values (any name) in the model's dtype
            if torch.is_tensor(value) and value.is_floating_point():
                inputs[key] = value.to(self.dtype)
        if not settings.greedy:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = self.net.generate(**inputs, generation_config=self._generation_config(settings))
        prompt_len = inputs["input_ids"].shape[1]
        prompt_counts = inputs["attention_mask"].sum(dim=1).tolist()
        return [self._finish(req, out[row, prompt_len:].tolist(), int(prompt_counts[row]), settings)
                for row, req in enumerate(batch)]

    def _generation_config(self, settings: GenerationSettings) -> Any:
        """The model's own generation config with the sampling fields and length taken from `settings`."""
        config = copy.deepcopy(self.net.generation_config)
        config.max_new_tokens = settings.max_new_tokens
        config.pad_token_id = self.tokenizer.pad_token_id
        config.suppress_tokens = self._suppress or None
        config.do_sample = not settings.greedy
        config.temperature = None if settings.greedy else settings.temperature
        config.top_p = None if settings.greedy else settings.top_p
        config.top_k = None  # a model default such as top_k=1 would silently turn sampling greedy
        return config

    def _finish(self, req: Request, new: list[int], prompt_tokens: int,
                settings: GenerationSettings) -> Generation:
        stop = next((k for k, t in enumerate(new) if t in self._eos_ids), None)
        kept = new if stop is None else new[: stop + 1]
        reason = "stop" if stop is not None or len(new) < settings.max_new_tokens else "length"
        return Generation(sample_id=req.prompt.sample_id,
                          text=self.tokenizer.decode(kept, skip_special_tokens=True),
                          finish_reason=reason, prompt_tokens=prompt_tokens, completion_tokens=len(kept),
                          model=self._fingerprint)

    def _error(self, req: Request, message: str) -> Generation:
        return Generation(sample_id=req.prompt.sample_id, text="", model=self._fingerprint, error=message)

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the model and processor and release cached GPU memory."""
        for attr in ("net", "processor", "tokenizer", "_template_owner"):
            self.__dict__.pop(attr, None)
        self._free_memory()
