"""core/dtypes.py: one table of dtype names for the hf and vllm backends, training and merge."""

from __future__ import annotations

import pytest

from medharness.core.dtypes import DTYPE_CHOICES, canonical_dtype
from medharness.core.errors import ConfigError
from medharness.trainers.config import build_config, load_layers


@pytest.mark.parametrize(("given", "name"), [("auto", "auto"), ("bf16", "bfloat16"), ("half", "float16"),
                                             ("fp32", "float32"), ("float", "float32"),
                                             ("bfloat16", "bfloat16")])
def test_every_spelling_has_one_canonical_name(given: str, name: str) -> None:
    assert canonical_dtype(given, "x") == name


def test_an_unknown_dtype_names_where_and_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match=r"vllm backend: unknown dtype 'fp8'; use auto, float32"):
        canonical_dtype("fp8", "vllm backend")


def test_the_hf_backend_maps_names_to_torch_dtypes() -> None:
    torch = pytest.importorskip("torch")
    from medharness.core.dtypes import torch_dtype

    assert (torch_dtype("auto", False, "x") is torch.float32
            and torch_dtype("auto", True, "x") is torch.bfloat16)
    assert torch_dtype("half", False, "x") is torch.float16


def test_a_recipe_config_refuses_an_unknown_dtype_where_it_was_written() -> None:
    layers = load_layers("sft", [], None, {"task": "phantom_presence", "model": "m"}, ["dtype=fp8"])
    with pytest.raises(ConfigError,
                       match=r"-C dtype=fp8: dtype: .*must be one of " + ", ".join(DTYPE_CHOICES[:3])):
        build_config(layers)
