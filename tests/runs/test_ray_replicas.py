"""`run --executor ray` on a real local Ray instance (2 CPUs): the rows, the response-cache keys and resume of
a run whose engines are Ray replicas equal an in-process run's, byte for byte; a replica whose process dies
costs its in-flight batch a retry, never the run (backends/ray_replicas.py).

The first test needs no torch (a model-free backend from tests/support/ray_faults.py, which the Ray workers
import through PYTHONPATH; ~16 s, most of it Ray's start); the others are slow: each replica imports torch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the ray extra: pip install 'medharness[ray]'")

import ray_faults  # registers echo_dies_once and dies_once (tests/support)

from medharness.backends import ray_replicas
from medharness.backends.ray_replicas import RayExecutor
from medharness.cli import main
from medharness.core.errors import BackendError
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.runlog import RunDir

TASK = "phantom_presence"
SUPPORT = str(Path(ray_faults.__file__).parent)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local Ray instance for the module (its start is most of a test's time); runs join it."""
    path = os.pathsep.join(p for p in (SUPPORT, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


def rows_bytes(run: Path) -> bytes:
    return (run / "samples" / f"{TASK}.jsonl").read_bytes()


def test_a_replica_that_dies_is_retried_and_rows_equal_one_process(local_ray: Any, tmp_path: Path) -> None:
    """`run --executor ray --replicas 2` (the CLI), one replica's process dying on its first batch: the run
    finishes with every sample once, its rows (texts that record the batch each engine saw, per-sample
    errors) equal to an in-process run's byte for byte, and the error accounting the same."""
    marker = tmp_path / "died"
    common = ["run", "--model", "m", "--backend", "echo_dies_once", "--tasks", TASK, "--limit", "22",
              "--batch-size", "4", "--backend-option", "fail=7", "--no-progress", "--max-error-rate", "1",
              "--no-cache"]
    assert main([*common, "--output", str(tmp_path / "local")]) == 0
    assert main([*common, "--output", str(tmp_path / "ray"), "--executor", "ray", "--replicas", "2",
                 "--backend-option", f"marker={marker}"]) == 0
    assert marker.read_text().isdigit()  # a replica process did die (its pid)
    run = RunDir.open(tmp_path / "ray")
    ids = [r.sample_id for r in run.rows(TASK)]
    assert len(ids) == 22 and len(set(ids)) == 22 and run.log.status == "finished"
    assert rows_bytes(tmp_path / "ray") == rows_bytes(tmp_path / "local")
    summary = run.log.tasks[TASK].summary
    assert summary is not None and summary.n_errors == 2  # ids ending in 7 (of 22): per sample, as locally
    assert summary == RunDir.open(tmp_path / "local").log.tasks[TASK].summary
    assert run.log.model == "echo:m" and run.log.usage is not None and run.log.usage.model_calls == 22


def test_a_replica_that_dies_too_often_fails_the_run(local_ray: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its restarts (none here) a dead replica fails the run with a BackendError, recorded as such."""
    monkeypatch.setattr(ray_replicas, "RESTARTS", 0)
    config = RunConfig(model="m", backend="echo_dies_once", tasks=TASK, limit=8, batch_size=4, cache=False,
                       backend_options={"marker": str(tmp_path / "died")})
    with pytest.raises(BackendError, match="a Ray replica died and could not be restarted"):
        Runner(config, output=tmp_path / "run", executor=RayExecutor(replicas=2)).run()
    assert (tmp_path / "died").is_file() and not (tmp_path / "run").exists()  # no row: no directory left


@pytest.mark.slow
def test_a_replica_that_cannot_start_fails_cleanly(local_ray: Any, tmp_path: Path) -> None:
    """A model that cannot load in the replica is the backend's own error, before any run directory exists,
    and no replica is left behind."""
    config = RunConfig(model=str(tmp_path / "no-such-model"), backend="hf", tasks=TASK, limit=2)
    with pytest.raises(Exception, match="cannot load hf model"):
        Runner(config, output=tmp_path / "run", executor=RayExecutor(replicas=2)).run()
    assert not (tmp_path / "run").exists()
    deadline = time.monotonic() + 30  # the killed replicas hand their CPUs back
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2


# -- the hf backend on a tiny model (slow: each replica imports torch and loads the model) ------------------

def hf_config(model: Path, cache_dir: Path | None = None, backend: str = "hf", **extra: Any) -> RunConfig:
    return RunConfig(model=str(model), backend=backend, tasks=TASK, limit=20, batch_size=4, max_new_tokens=6,
                     cache=cache_dir is not None, cache_dir=str(cache_dir) if cache_dir else None, **extra)


@pytest.fixture(scope="module")
def reference(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The in-process run every Ray run is compared with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    Runner(hf_config(tiny_models["qwen2_vl"]), output=out).run()
    return out


@pytest.mark.slow
def test_hf_rows_and_cache_keys_equal_in_process(local_ray: Any, reference: Path,
                                                 tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """1 replica and 2 replicas write the in-process run's rows byte for byte, and the model recorded is the
    same; what the Ray run stored in the response cache is what an in-process run looks up (all hits)."""
    model = tiny_models["qwen2_vl"]
    for n in (1, 2):
        run = Runner(hf_config(model), output=tmp_path / f"ray{n}", executor=RayExecutor(replicas=n)).run()
        assert rows_bytes(run.path) == rows_bytes(reference), f"{n} replica(s)"
        assert run.log.model == RunDir.open(reference).log.model
        assert run.log.attn_implementation == "sdpa"
    cache = tmp_path / "cache"
    Runner(hf_config(model, cache), output=tmp_path / "cached-ray", executor=RayExecutor(replicas=2)).run()
    local = Runner(hf_config(model, cache), output=tmp_path / "cached-local").run()
    assert local.log.usage is not None and local.log.usage.model_calls == 0
    assert local.log.usage.cache is not None and local.log.usage.cache.hits == 20
    assert rows_bytes(local.path) == rows_bytes(reference)


@pytest.mark.slow
def test_hf_replica_killed_mid_run_is_retried(local_ray: Any, reference: Path, tiny_models: dict[str, Path],
                                              tmp_path: Path) -> None:
    """An hf replica whose process dies on its first batch is restarted by Ray and the batch retried: every
    sample scored once, the rows those of the in-process run."""
    marker = tmp_path / "died"
    config = hf_config(tiny_models["qwen2_vl"], backend="dies_once",
                       backend_options={"inner": "hf", "marker": str(marker), "batch_size": 4})
    run = Runner(config, output=tmp_path / "run", executor=RayExecutor(replicas=2)).run()
    assert marker.read_text().isdigit()
    assert len({r.sample_id for r in run.rows(TASK)}) == len(run.rows(TASK)) == 20
    assert rows_bytes(run.path) == rows_bytes(reference)


@pytest.mark.slow
def test_an_interrupted_ray_run_resumes(local_ray: Any, reference: Path, tiny_models: dict[str, Path],
                                        tmp_path: Path) -> None:
    """A Ray run stopped after its first batch (Ctrl-C) is continued by --resume on Ray: the rows it had are
    kept, the rest generated once, and the file equals the uninterrupted in-process run's."""
    out, model = tmp_path / "run", tiny_models["qwen2_vl"]

    def stop(task: str, done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt("stopped by the test")

    with pytest.raises(KeyboardInterrupt):
        Runner(hf_config(model), output=out, progress=stop, executor=RayExecutor(replicas=2)).run()
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert 0 < rows_bytes(out).count(b"\n") < 20
    run = Runner(hf_config(model), output=out, resume=True, executor=RayExecutor(replicas=2)).run()
    assert run.log.status == "finished"
    assert rows_bytes(out) == rows_bytes(reference)


@pytest.mark.slow
def test_vllm_data_parallel_replicas_without_vllm_fail_cleanly(local_ray: Any,
                                                               tiny_models: dict[str, Path]) -> None:
    """`--backend-option data_parallel_size=2` starts two vllm replicas on the Ray instance; where vLLM is
    not installed each replica's own error comes back (not a dead-actor report), and no replica is left."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed: tests/backends/test_vllm_backend.py runs real data-parallel engines")
    from medharness.backends.vllm import VLLMBackend

    with pytest.raises(BackendError, match="a Ray replica failed: ModuleNotFoundError: No module named 'vll"):
        VLLMBackend(str(tiny_models["qwen2_vl"]), data_parallel_size=2)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2
