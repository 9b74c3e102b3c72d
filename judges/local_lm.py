"""`hf_lm`: a local text-only causal LM as a judge (`AutoModelForCausalLM` + `AutoTokenizer`), e.g. the GRPO
study's reference LLMs BioGPT (`microsoft/biogpt`) and BioMistral (`BioMistral/BioMistral-7B`): base models
that complete text, so the judge's messages are joined as plain text (no chat template) and the model
continues it.

Options: `device` ("auto": the process's GPU, `cuda:$LOCAL_RANK` under a multi-process launch, else cpu),
`dtype` ("auto": bfloat16 on cuda, float32 on cpu), `batch_size` (8). Requests run in left-padded batches;
temperature 0 is greedy decoding; the reply is the new tokens up to the first end-of-sequence token. A batch
that fails is retried one request at a time, so only the failing request gets a `Generation(error=...)`.
This module imports torch and transformers; the judge panel registers it lazily.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.backends.base import Backend, Request
from medharness.backends.vlm_common import checkpoint_folder, weights_fingerprint
from medharness.core.dtypes import torch_dtype
from medharness.core.errors import BackendError, ConfigError
from medharness.core.records import Generation, GenerationSettings, Prompt

log = logging.getLogger(__name__)
OPTIONS = frozenset({"device", "dtype", "batch_size"})


def prompt_text(prompt: Prompt) -> str:
    """The judge's messages as one plain text (each turn's text parts, turns separated by a blank line)."""
    return "\n\n".join("".join(p.text or "" for p in m.content if p.type == "text") for m in prompt.messages)


class LocalLMBackend(Backend):
    """A local causal LM that continues the judge prompt as plain text (registered lazily by judges.panel)."""

    name = "hf_lm"
    needs_images = False

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 **options: Any) -> None:
        if options:
            raise ConfigError(f"the hf_lm judge backend does not take {', '.join(sorted(options))}; it "
                              f"takes: {', '.join(sorted(OPTIONS))}")
        super().__init__(model)
        if int(batch_size) < 1:
            raise ConfigError(f"hf_lm backend: batch_size must be >= 1, got {batch_size}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = torch_dtype(dtype, self.device.type == "cuda", "hf_lm backend")
        self.batch_size = int(batch_size)
        local = Path(model).expanduser()
        self.source = str(local.resolve()) if local.exists() else model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source)
            self.net = AutoModelForCausalLM.from_pretrained(self.source, dtype=self.dtype)
            self.net = self.net.to(self.device).eval()  # type: ignore[arg-type]
        except Exception as exc:  # missing files, unsupported architecture, offline hub id, ...
            raise BackendError(f"cannot load causal LM {model!r} for the hf_lm judge: {exc}") from exc
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.net.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        folder = checkpoint_folder(self.source)
        digest = weights_fingerprint(folder) if folder is not None else \
            str(getattr(self.net.config, "_commit_hash", None) or "unknown")[:12]
        self._fingerprint = f"hf_lm:{self.source}@{digest}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(requests), self.batch_size):
            out += self._isolated(list(requests[start: start + self.batch_size]))
        return out

    def _isolated(self, batch: list[Request]) -> list[Generation]:
        try:
            return self._run(batch)
        except Exception as exc:  # noqa: BLE001 - a failed batch is retried per request
            if len(batch) == 1:
                return [Generation(sample_id=batch[0].prompt.sample_id, text="", model=self._fingerprint,
                                   error=f"{type(exc).__name__}: {exc}")]
            return [g for req in batch for g in self._isolated([req])]

    def _run(self, batch: list[Request]) -> list[Generation]:
        import torch

        settings = batch[0].prompt.settings
        if any(r.prompt.settings != settings for r in batch):
            return [g for req in batch for g in self._run([req])]
        enc = self.tokenizer([prompt_text(r.prompt) for r in batch], padding=True,
                             return_tensors="pt").to(self.device)
        if not settings.greedy:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            ids = self.net.generate(**enc, generation_config=self._config(settings))
        new = ids[:, enc["input_ids"].shape[1]:].tolist()
        counts = enc["attention_mask"].sum(dim=1).tolist()
        return [self._finish(r, row, int(n), settings) for r, row, n in zip(batch, new, counts, strict=True)]

    def _config(self, settings: GenerationSettings) -> Any:
        config = copy.deepcopy(self.net.generation_config)
        config.max_new_tokens = settings.max_new_tokens
        config.pad_token_id = self.tokenizer.pad_token_id
        config.do_sample = not settings.greedy
        config.temperature = None if settings.greedy else settings.temperature
        config.top_p = None if settings.greedy else settings.top_p
        config.top_k = None
        return config

    def _finish(self, req: Request, new: list[int], prompt_tokens: int,
                settings: GenerationSettings) -> Generation:
        stop = next((k for k, t in enumerate(new) if t in self._eos), None)
        kept = new if stop is None else new[: stop + 1]
        reason = "stop" if stop is not None or len(new) < settings.max_new_tokens else "length"
        return Generation(sample_id=req.prompt.sample_id,
                          text=self.tokenizer.decode(kept, skip_special_tokens=True), finish_reason=reason,
                          prompt_tokens=prompt_tokens, completion_tokens=len(kept), model=self._fingerprint)

    def close(self) -> None:
        for attr in ("net", "tokenizer"):
            self.__dict__.pop(attr, None)
