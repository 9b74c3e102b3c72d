"""Shared fixtures: offline environment, the real data in ../shared/data, tiny models built once."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from shared_data import shared  # tests/support

_cache = tempfile.mkdtemp(prefix="medharness-test-cache-")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)  # leave nothing behind in the temporary directory
for var, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": os.path.join(_cache, "hf"),
    "XDG_CACHE_HOME": _cache,
    "MPLCONFIGDIR": os.path.join(_cache, "mpl"),
    # one Ray token for every local Ray instance the suite starts (in this process, whose Ray client keeps
    # the first token it read, and in its subprocesses), and none written to ~/.ray/auth_token
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}.items():
    os.environ.setdefault(var, value)


@pytest.fixture(scope="session")
def vqa_rad_dir() -> Path:
    return shared("vqa-rad-test")


@pytest.fixture(scope="session")
def slake_dir() -> Path:
    return shared("slake-test")


@pytest.fixture(scope="session")
def pneumonia_dir() -> Path:
    return shared("pneumoniamnist")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight Qwen2-VL and Qwen2.5-VL checkpoints, built offline once per session."""
    pytest.importorskip("transformers")
    from medharness.checkpoints.tiny import build_tiny_vlm

    out = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_vlm(out / arch, arch=arch) for arch in ("qwen2_vl", "qwen2_5_vl")}
