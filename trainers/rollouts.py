"""LoRA rollouts at the full model's cost.

GRPO-family recipes sample their rollouts with HF `generate` on the PEFT model. Unmerged, every adapted layer
adds its adapter's two products, the scaling, the sum, two dtype casts (and, the trainer being in train mode,
its dropout) to each decoded token: on Qwen2-VL-2B with q/k/v/o adapters, 1.85x the full model's kernels per
token (`bench/lora_rollout_ops.py`), where decoding is bound by kernel launches; an H200 measured the LoRA
GRPO step 1.66x slower than the full one (docs/benchmarks.md). TRL merges the adapter only for its vLLM
rollouts (and leaves the bf16 rounding of merge then unmerge in the base weights). Here `generate` runs with
the adapter merged, and the frozen base weights are then restored bit for bit from a copy taken once: LoRA
never trains them. The copy costs the adapted layers' base weights once more (about 0.3 GiB on Qwen2-VL-2B,
q/k/v/o).
"""

from __future__ import annotations

import functools
from typing import Any


def merge_for_rollouts(model: Any) -> int:
    """Make `model.generate` (a PeftModel's) run with its LoRA adapters merged; returns the number of adapted
    layers. Only for unsharded weights (not DeepSpeed ZeRO-3 or FSDP: the caller checks)."""
    import torch
    from peft.tuners.lora import LoraLayer

    layers: list[Any] = [m for m in model.modules() if isinstance(m, LoraLayer)]
    with torch.no_grad():
        originals: list[tuple[Any, Any]] = [(w, w.detach().clone())
                                            for w in (layer.get_base_layer().weight for layer in layers)]
    inner = model.generate

    @functools.wraps(inner)
    def generate(*args: Any, **kwargs: Any) -> Any:
        model.merge_adapter()
        try:
            return inner(*args, **kwargs)
        finally:
            model.unmerge_adapter()  # peft's own bookkeeping (its merged flags); once a call, not a token
            with torch.no_grad():  # unmerging leaves rounding in bf16 weights: restore them exactly
                for weight, original in originals:
                    weight.copy_(original)

    model.generate = generate
    return len(layers)
