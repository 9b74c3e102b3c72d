"""Weight dtypes: the one table of the names every command and file accepts (`--dtype`, `dtype:`, a backend
option), and their torch dtypes. `auto` is kept as it is: each user says what it means (the hf backend and
training: bfloat16 on a GPU, float32 on the CPU; vllm: the model's own; merge: the base's)."""

from __future__ import annotations

from typing import Any

from medharness.core.errors import ConfigError

DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float": "float32", "bfloat16": "bfloat16",
               "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16"}
DTYPE_CHOICES = ("auto", *DTYPE_NAMES)


def canonical_dtype(value: str, what: str) -> str:
    """`auto`, or the canonical name (float32, bfloat16, float16) of `value`; a ConfigError naming `what`."""
    if value == "auto":
        return value
    if value not in DTYPE_NAMES:
        raise ConfigError(f"{what}: unknown dtype {value!r}; use {', '.join(DTYPE_CHOICES)}")
    return DTYPE_NAMES[value]


def torch_dtype(value: str, use_gpu: bool, what: str) -> Any:
    """The torch dtype of `value` (imports torch); `auto`: bfloat16 on a GPU, float32 on the CPU."""
    import torch

    name = canonical_dtype(value, what)
    return getattr(torch, "bfloat16" if use_gpu else "float32") if name == "auto" else getattr(torch, name)
