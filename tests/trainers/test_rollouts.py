"""LoRA rollouts with the adapters merged (trainers/rollouts.py), on a real tiny Qwen2-VL through peft: the
same logits as the unmerged adapter, the full model's kernels per decoded token, base weights restored bit
for bit (bf16 too, where a bare merge then unmerge leaves rounding)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode

from medharness.core.torchvision_shim import ensure_torchvision_importable
from medharness.trainers.rollouts import merge_for_rollouts

ensure_torchvision_importable()  # before peft pulls transformers' models in
pytest.importorskip("peft")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class OpCount(TorchDispatchMode):
    """Counts the aten operations run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def adapted(model_dir: Path, dtype: Any = None, dropout: float = 0.05) -> Any:
    """The tiny model with LoRA adapters whose B is not zero (peft starts B at 0: merged == base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype or torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                  target_modules=TARGETS))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return peft_model


def base_weights(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}


def generate(model: Any, tokens: int) -> Any:
    ids = torch.arange(10, 30).view(2, 10)
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                              min_new_tokens=tokens, do_sample=False, output_logits=True,
                              return_dict_in_generate=True)


def ops_per_token(model: Any) -> float:
    counts = []
    for tokens in (1, 9):  # merging and restoring happen once a call: the difference is per token
        with OpCount() as c:
            generate(model, tokens)
        counts.append(sum(c.ops.values()))
    return (counts[1] - counts[0]) / 8


def test_merged_rollouts_give_the_adapters_logits_and_leave_the_base_exact(
        tiny_models: dict[str, Path]) -> None:
    model = adapted(tiny_models["qwen2_vl"])
    model.eval()  # the unmerged reference without dropout
    expected = generate(model, 6)
    before = base_weights(model)
    assert merge_for_rollouts(model) == 4 * model.config.text_config.num_hidden_layers
    model.train()  # as TRL generates: merged layers skip the adapter and its dropout
    got = generate(model, 6)
    assert torch.equal(got.sequences, expected.sequences)
    for a, b in zip(got.logits, expected.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    after = base_weights(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    from peft.tuners.lora import LoraLayer

    assert not any(m.merged for m in model.modules() if isinstance(m, LoraLayer))  # training sees adapters


def test_merged_rollouts_cost_the_full_models_kernels_per_token(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoModelForImageTextToText

    full = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen2_vl"]).train()
    lora = adapted(tiny_models["qwen2_vl"]).train()
    unmerged = ops_per_token(lora)
    merge_for_rollouts(lora)
    merged = ops_per_token(lora)
    assert merged == ops_per_token(full) < unmerged
    # each adapted layer adds its products, scaling, sum and dropout to every decoded token
    layers = 4 * full.config.text_config.num_hidden_layers
    assert unmerged - merged >= 7 * layers


def test_bf16_base_weights_come_back_bit_for_bit(tiny_models: dict[str, Path]) -> None:
    bare = adapted(tiny_models["qwen2_vl"], torch.bfloat16)
    before = base_weights(bare)
    bare.merge_adapter()
    bare.unmerge_adapter()
    drifted = base_weights(bare)
    assert any(not torch.equal(before[n], drifted[n]) for n in before), "bf16 merge/unmerge was exact"
    model = adapted(tiny_models["qwen2_vl"], torch.bfloat16)
    before = base_weights(model)
    merge_for_rollouts(model)
    for _ in range(3):
        generate(model, 2)
    after = base_weights(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
