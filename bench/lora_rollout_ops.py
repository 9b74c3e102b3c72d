"""Why GRPO with LoRA steps slower than the full fine-tune when rollouts use HF `generate` (a script, not a
test): kernels launched per decoded token, on Qwen2-VL-2B's structure.

Decoding a 2 B model at GRPO's batch sizes is bound by kernel launches, not arithmetic, so the count of
kernel-launching aten operations per decoded token predicts its cost on a GPU. The count depends on the
structure only (28 decoder layers, q/k/v/o adapters of the `grpo_lora` preset), so this builds that depth with
the widths of `bench/gpu/qwen2vl_2b.py --size mini` and runs on a CPU in seconds. Rows: the full model (what
`grpo` generates with), the unmerged PEFT model in train mode (as TRL 1.16 generates: LoRA dropout on), with
TRL's `disable_dropout`, and with medharness's merged rollouts (`lora.merge_for_rollouts`, the default;
trainers/rollouts.py). Views, reshapes and allocations are not counted (they launch no kernel).

Usage: python bench/lora_rollout_ops.py [--layers 28] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))
from qwen2vl_2b import MINI, build  # the GPU script's architecture builder

# allocations and reshapes that aten does not flag as views: no kernel either
NO_KERNEL = {"aten.empty", "aten.empty_like", "aten.empty_strided", "aten.lift_fresh", "aten._unsafe_view"}


def count_ops(model: Any, tokens: int) -> int:
    """Kernel-launching aten operations in one sampled `generate` of `tokens` tokens for 8 sequences."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: Counter[str] = Counter()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            name = str(func.overloadpacket)
            if not func.is_view and name not in NO_KERNEL:
                self.ops[name] += 1
            return func(*args, **(kwargs or {}))

    ids = torch.randint(10, 200, (8, 40), generator=torch.Generator().manual_seed(0))
    with Count() as c, torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                       min_new_tokens=tokens, do_sample=True)
    return sum(c.ops.values())


def per_token(model: Any) -> float:
    return (count_ops(model, 17) - count_ops(model, 1)) / 16  # once-a-call work (prefill, merging) cancels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=28, help="decoder layers (Qwen2-VL-2B: 28)")
    parser.add_argument("--out", type=Path, help="where the model is built (default: a temporary folder)")
    args = parser.parse_args()
    from medharness.core.torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration
    from trl.trainer.utils import disable_dropout_in_model

    from medharness.trainers.rollouts import merge_for_rollouts

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp) / "model"
        build(folder, {**MINI, "layers": args.layers})

        def lora() -> Any:  # the grpo_lora preset's adapter, in train mode as TRL generates
            model = Qwen2VLForConditionalGeneration.from_pretrained(folder)
            return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=[
                "q_proj", "k_proj", "v_proj", "o_proj"])).train()

        rows = [("full fine-tune (`grpo`)", per_token(Qwen2VLForConditionalGeneration.from_pretrained(
            folder).train()))]
        model = lora()
        rows.append(("LoRA, unmerged (TRL's HF generate)", per_token(model)))
        disable_dropout_in_model(model)
        rows.append(("LoRA, unmerged, `trl.disable_dropout: true`", per_token(model)))
        model = lora()
        merge_for_rollouts(model)
        rows.append(("LoRA, merged rollouts (`lora.merge_for_rollouts`, default)", per_token(model)))
    print(f"Qwen2-VL structure, {args.layers} decoder layers, LoRA r 8 on q/k/v/o; one sampled decoding step "
          f"of 8 sequences\n")
    print(tabulate([[name, f"{n:.0f}", f"{n / rows[0][1]:.2f}"] for name, n in rows],
                   headers=["rollouts", "kernel-launching ops per token", "x full"], tablefmt="github"))


if __name__ == "__main__":
    main()
