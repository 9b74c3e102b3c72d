"""`vllm`: chat vision-language models on vLLM's offline engine (`vllm.LLM`), for fast batched evaluation.

    medharness run --backend vllm --model PATH_OR_HUB_ID --tasks ...

Options (constructor keywords; see docs/vllm.md): `dtype` ("auto"), `max_model_len` (None = the model's),
`tensor_parallel_size` (1), `gpu_memory_utilization` (0.9), `enforce_eager` (False), `max_num_seqs` (None =
vLLM's default), `max_images_per_prompt` (4: vLLM's `limit_mm_per_prompt`; videos are off), `min_pixels` /
`max_pixels` (the image processor's resize bounds, via `mm_processor_kwargs`), `lora` (a PEFT adapter folder;
`--model ADAPTER_DIR` does the same, serving it on its base: `base`, else the adapter's own record of it),
`batch_size` (64: requests handed to the engine per call; the engine batches continuously inside),
`trust_remote_code` (False), `engine_args` (a dict passed on to `vllm.LLM` as is), `data_parallel_size` (1:
N > 1 runs N engines of `tensor_parallel_size` GPUs each as Ray replicas, the same as `--executor ray
--replicas N` on a local Ray instance: ray_replicas.py; needs the `ray` extra).

How a request is built: the prompt text is rendered by the model's own HF processor chat template with the
same message conversion as the `hf` backend (both call `medharness.backends.vlm_common.render_prompt`), and
the PIL images go in as `multi_modal_data` to `LLM.enqueue`; vLLM's multimodal processor expands each image
placeholder. Chosen over `LLM.chat` with OpenAI-style content parts because (1) the prompt is the `hf`
backend's prompt string by construction, so both backends answer the same question; (2) `LLM.chat` guesses the
template's content format and, for templates it classes as "string", moves every image to the start of the
message; (3) images need no base64 round trip; (4) each request is rendered and enqueued on its own, so a
broken image, a prompt over `max_model_len` or too many images fail that request alone
(`Generation(error=...)`), while all the valid ones then run in one continuous batch
(`LLM.wait_for_completion`).

Decoding mirrors the `hf` backend: temperature 0 is greedy; otherwise temperature / top_p with a per-request
seed (`settings.seed`); the model's `generation_config.json` repetition_penalty is kept (as the hf backend's
copied generation config keeps it); image/video placeholder tokens are suppressed (logit bias -100, the most
negative vLLM accepts); text is decoded with the same tokenizer call as the hf backend.

LoRA: the adapter is served with vLLM's own LoRA support (`enable_lora`, one `LoRARequest` on every request),
not merged. See docs/vllm.md for why, and for data parallelism.
This module imports vllm, torch and transformers; the registry imports it only when "vllm" is used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.backends.base import Backend, Request, backend
from medharness.backends.ray_replicas import RayExecutor, RayReplicas
from medharness.backends.vlm_common import (
    adapter_fingerprint,
    chat_template_owner,
    checkpoint_folder,
    image_count_error,
    is_adapter_folder,
    render_prompt,
    resolve_adapter,
    stop_token_ids,
    vision_token_ids,
    weights_fingerprint,
)
from medharness.core.dtypes import canonical_dtype
from medharness.core.errors import BackendError, ConfigError
from medharness.core.records import Generation, GenerationSettings
from medharness.core.torchvision_shim import ensure_torchvision_importable

ensure_torchvision_importable()  # before vllm/transformers pull torchvision in

from transformers import AutoConfig, AutoProcessor, GenerationConfig

log = logging.getLogger(__name__)

_SUPPRESS_BIAS = -100.0  # vLLM clamps logit_bias to [-100, 100]
# LoRA target modules vLLM cannot serve on the language model of a VLM (vision tower / projector, or full
# copies).
_LORA_REFUSED_KEYS = ("modules_to_save",)


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """The adapter's adapter_config.json, checked for what vLLM's LoRA can serve."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise ConfigError(f"vllm backend: lora={folder} is not a PEFT adapter folder (no "
                          "adapter_config.json)")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"vllm backend: unreadable {path}: {exc}") from exc
    if not any(folder.glob("adapter_model.*")):
        raise ConfigError(f"vllm backend: {folder} has no adapter_model.safetensors / .bin")
    if config.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"vllm backend: only LoRA adapters are served, {folder} is "
                          f"{config.get('peft_type')}")
    for key in _LORA_REFUSED_KEYS:
        if config.get(key):
            raise ConfigError(f"vllm backend: adapter {folder} sets {key}={config[key]}; vLLM's LoRA cannot "
                              "serve fully trained modules: merge the adapter into the base model first "
                              "(docs/vllm.md) or use --backend hf")
    return config


def model_fingerprint(source: str, lora: tuple[str, str] | None = None) -> str:
    """`vllm:<path or hub id>@<weights hash>[+lora:<adapter path>@<adapter hash>]`."""
    folder = checkpoint_folder(source)
    digest = weights_fingerprint(folder) if folder is not None else "unknown"
    out = f"vllm:{source}@{digest}"
    if lora is not None:
        out += f"+lora:{lora[0]}@{lora[1]}"
    return out


@backend("vllm")
class VLLMBackend(Backend):
    """`--backend vllm --model PATH_OR_HUB_ID`: vLLM offline engine (continuous batching, paged KV cache)."""

    def __init__(self, model: str, dtype: str = "auto", max_model_len: int | None = None,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 enforce_eager: bool = False, max_num_seqs: int | None = None, max_images_per_prompt: int = 4,
                 min_pixels: int | None = None, max_pixels: int | None = None, lora: str | None = None,
                 batch_size: int = 64, trust_remote_code: bool = False, seed: int = 0,
                 engine_args: dict[str, Any] | None = None, device: str = "auto", data_parallel_size: int = 1,
                 base: str | None = None, **options: Any) -> None:
        if is_adapter_folder(model):  # an adapter folder as the model: serve it as `lora` on its base
            if lora:
                raise ConfigError(f"vllm backend: --model {model} is an adapter folder; do not also pass "
                                  "lora=")
            adapter_folder = resolve_adapter(model, base)
            model, lora = adapter_folder.base, str(adapter_folder.path)
        worker_options = {k: v for k, v in locals().items()
                          if k not in ("self", "model", "options", "data_parallel_size", "__class__", "base",
                                       "adapter_folder")}
        super().__init__(model, **options)
        if options:
            log.warning("vllm backend ignores unknown options: %s", ", ".join(sorted(options)))
        if device not in ("auto", "cuda", "cpu"):
            raise ConfigError(f"vllm backend: device {device!r}: vLLM picks its platform itself (auto)")
        dtype = canonical_dtype(dtype, "vllm backend")
        if min(int(batch_size), int(tensor_parallel_size), int(data_parallel_size)) < 1 \
                or int(max_images_per_prompt) < 0:
            raise ConfigError("vllm backend: batch_size, tensor_parallel_size and data_parallel_size must be "
                              ">= 1, max_images_per_prompt >= 0")
        self.batch_size = int(batch_size) * int(data_parallel_size)
        local = Path(model).expanduser()
        self.source = str(local.resolve()) if local.exists() else model

        self.lora_path: Path | None = None
        lora_id: tuple[str, str] | None = None
        lora_rank = 0
        if lora:
            self.lora_path = Path(lora).expanduser().resolve()
            adapter = read_adapter_config(self.lora_path)
            lora_rank = int(adapter.get("r", 8))
            lora_id = (str(self.lora_path), adapter_fingerprint(self.lora_path))
        self._fingerprint = model_fingerprint(self.source, lora_id)
        self.pool: RayReplicas | None = None
        if int(data_parallel_size) > 1:  # N engines of tensor_parallel_size GPUs each, as Ray replicas
            self.pool = RayReplicas("vllm", self.source, worker_options,
                                    RayExecutor(replicas=int(data_parallel_size)))
            return

        try:  # the main-process side: the chat template, the tokenizer and the special token ids
            self.processor = AutoProcessor.from_pretrained(self.source, trust_remote_code=trust_remote_code)
            hf_config = AutoConfig.from_pretrained(self.source, trust_remote_code=trust_remote_code)
        except Exception as exc:
            raise BackendError(f"cannot load the processor of {model!r}: {exc}") from exc
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self._template_owner = chat_template_owner(self.processor)
        self._eos_ids, self._repetition_penalty = self._generation_defaults()
        text_config = getattr(hf_config, "text_config", None)
        vocab_size = (getattr(text_config, "vocab_size", None) or getattr(hf_config, "vocab_size", None)
                      or len(self.tokenizer))
        suppressed = vision_token_ids(hf_config, self.processor, self.tokenizer, vocab_size,
                                      exclude=self._eos_ids)
        self._logit_bias = {i: _SUPPRESS_BIAS for i in suppressed}

        mm_kwargs = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
                     if v is not None}
        args: dict[str, Any] = {
            "model": self.source, "dtype": dtype, "tensor_parallel_size": int(tensor_parallel_size),
            "gpu_memory_utilization": float(gpu_memory_utilization), "enforce_eager": bool(enforce_eager),
            "seed": int(seed), "trust_remote_code": trust_remote_code,
            "limit_mm_per_prompt": {"image": int(max_images_per_prompt), "video": 0},
        }
        if max_model_len is not None:
            args["max_model_len"] = int(max_model_len)
        if max_num_seqs is not None:
            args["max_num_seqs"] = int(max_num_seqs)
        if mm_kwargs:
            args["mm_processor_kwargs"] = mm_kwargs
        if self.lora_path is not None:
            args.update(enable_lora=True, max_loras=1, max_lora_rank=_lora_rank_slot(lora_rank))
        args.update(engine_args or {})
        self.engine_args = args

        from vllm import LLM  # heavy: imported when the engine is built, not when this module is imported
        from vllm.lora.request import LoRARequest

        try:
            self.llm = LLM(**args)
        except Exception as exc:  # unsupported architecture, out of memory, bad option, ...
            raise BackendError(f"cannot start vLLM for {model!r}: {type(exc).__name__}: {exc}") from exc
        self._lora_request = (LoRARequest("adapter", 1, str(self.lora_path))
                              if self.lora_path is not None else None)
        log.info("started vLLM engine %s (%s)", self._fingerprint,
                 ", ".join(f"{k}={v}" for k, v in args.items() if k != "model"))

    # -- identity -------------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def batch_size_hint(self) -> int:
        return self.batch_size

    # -- special tokens and model defaults ------------------------------------------------------------

    def _generation_defaults(self) -> tuple[set[int], float]:
        """Stop ids (generation config eos + tokenizer eos, as the hf backend) and the repetition penalty."""
        try:
            gen = GenerationConfig.from_pretrained(self.source)
        except Exception:  # noqa: BLE001 - no generation_config.json
            gen = GenerationConfig()
        return stop_token_ids(gen.eos_token_id, self.tokenizer), float(gen.repetition_penalty or 1.0)

    # -- generation -----------------------------------------------------------------------------------

    def sampling_params(self, settings: GenerationSettings) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            temperature=0.0 if settings.greedy else settings.temperature,
            top_p=1.0 if settings.greedy else settings.top_p,
            top_k=0, seed=None if settings.greedy else settings.seed,
            max_tokens=settings.max_new_tokens, repetition_penalty=self._repetition_penalty,
            stop_token_ids=sorted(self._eos_ids), logit_bias=dict(self._logit_bias) or None,
            detokenize=False,  # text is decoded below exactly as the hf backend decodes it
        )

    def render(self, request: Request) -> dict[str, Any]:
        """The engine prompt: the chat-template text plus the request's images as multimodal data."""
        prompt: dict[str, Any] = {"prompt": render_prompt(self._template_owner, request.prompt)}
        if request.images:
            prompt["multi_modal_data"] = {"image": [im.convert("RGB") for im in request.images]}
        return prompt

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Render and enqueue each request on its own (a failure stays with its request), then run them
        all."""
        if self.pool is not None:
            return self.pool.generate(requests)
        results: list[Generation | None] = [None] * len(requests)
        queued: dict[str, int] = {}
        for i, req in enumerate(requests):
            problem = image_count_error(req)
            if problem is not None:
                results[i] = self._error(req, problem)
                continue
            try:
                (request_id,) = self.llm.enqueue(self.render(req), self.sampling_params(req.prompt.settings),
                                                 lora_request=self._lora_request, use_tqdm=False)
            # broken image, too many images, prompt over max_model_len, ...
            except Exception as exc:  # noqa: BLE001
                log.warning("vllm request %s refused: %s", req.prompt.sample_id, _describe(exc))
                results[i] = self._error(req, _describe(exc))
                continue
            queued[request_id] = i
            queued.setdefault(request_id.rsplit("-", 1)[0], i)  # outputs carry the id without vLLM's suffix
        if queued:
            try:
                outputs = self.llm.wait_for_completion(use_tqdm=False)
            # the engine itself failed (EngineDeadError, ...): not one sample's fault
            except Exception as exc:
                raise BackendError(f"vLLM engine failed: {type(exc).__name__}: {exc}") from exc
            for out in outputs:
                index = queued.get(out.request_id)
                if index is not None and results[index] is None:
                    results[index] = self._finish(requests[index], out)
        for i in set(queued.values()):  # never answered: should not happen, but never drop a sample
            if results[i] is None:
                results[i] = self._error(requests[i], "vLLM returned no output for this request")
        return [g for g in results if g is not None]

    def _finish(self, req: Request, out: Any) -> Generation:
        completion = out.outputs[0]
        reason = completion.finish_reason
        if reason not in ("stop", "length"):
            return self._error(req, f"vLLM finished the request with {reason!r}")
        tokens = list(completion.token_ids)
        return Generation(sample_id=req.prompt.sample_id,
                          text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                          finish_reason=reason, prompt_tokens=len(out.prompt_token_ids or []),
                          completion_tokens=len(tokens), model=self._fingerprint)

    def _error(self, req: Request, message: str) -> Generation:
        return Generation(sample_id=req.prompt.sample_id, text="", model=self._fingerprint, error=message)

    def close(self) -> None:
        """Shut the engine's worker processes down and drop the engine."""
        if self.pool is not None:
            self.pool.close()
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as exc:  # noqa: BLE001 - already gone
            log.debug("vllm shutdown: %s", exc)
        del llm
        import gc

        gc.collect()


def _describe(exc: BaseException) -> str:
    """The exception with its causes: vLLM wraps processor errors ("Failed to apply ...") around the
    reason."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def _lora_rank_slot(rank: int) -> int:
    """vLLM accepts only some max_lora_rank values; the smallest one that holds `rank`."""
    for slot in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= slot:
            return slot
    raise ConfigError(f"vllm backend: LoRA rank {rank} is over vLLM's largest max_lora_rank (512)")

