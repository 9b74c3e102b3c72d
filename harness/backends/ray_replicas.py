"""Replicas of a local backend on a Ray cluster: `run --executor ray [--replicas N] [--ray-address ADDR]`.

Each replica is a Ray actor that owns one engine of an ordinary backend class (`hf`, `vllm` or a plugin),
built in the actor from the same name, model and options an in-process run uses. `RayReplicas` is itself a
`Backend`, so the run loop (`runs/pipeline.py`) does not change: the run directory, the rows, the response
cache (in the driver, keyed by the engine's own fingerprint), resume and per-sample errors are the pipeline's.

A `generate` call is cut into chunks of the engine's own batch (`batch_size`: what one in-process call hands
the engine), each sent to the next free replica and put back in request order. The engine therefore sees the
same batches as in one process, which is what keeps greedy rows byte-identical between an in-process run, one
replica and N replicas (batched greedy decoding can depend on what else is in the batch: padding, vLLM's
scheduling). Each call hands the replicas `replicas x batch` requests, so all of them are busy.

The replicas' resources are reserved at once (a placement group): several runs sharing a cluster each wait
for their whole share. Fault tolerance is Ray's own: actors are created with `max_restarts` /
`max_task_retries`, so a replica whose process dies (out of memory, a lost node) is started again and its
in-flight chunk retried; the run goes on.
A replica that dies more than `RESTARTS` times, or an engine that raises as a whole, fails the run with a
`BackendError` (rows already written stay; `--resume` continues). A per-sample failure is a `Generation` with
`error` set, as in one process.

Why actors that each own an existing backend, not Ray Data's vLLM processor: the processor builds its own
vLLM prompts and sampling (its chat template handling, its decoding), so its rows would not be the `vllm`
backend's, it serves vLLM only (no `hf`), and it runs a dataset pipeline of its own where the run loop needs
a batch in, a batch out (resume, the cache and the error-rate check work per batch). `import ray` happens only
inside functions: Ray is the `ray` extra, and `medharness --help` never imports it.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from medharness.backends.base import BACKENDS, Backend, Request
from medharness.core.errors import BackendError, ConfigError, MedHarnessError
from medharness.core.records import Generation

log = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'medharness[ray]'"
RESTARTS = 3  # times a replica may die (restarted, its chunk retried) before the run fails
LOCAL_ONLY = ("openai", "gemini", "replay", "baseline")  # no engine to replicate: they run in the driver


@dataclass(frozen=True)
class RayExecutor:
    """Where the replicas run: `replicas` engines (None: one per GPU group of the cluster, 1 without GPUs) on
    the Ray cluster at `address` (None: the instance this process already joined, else the cluster
    `RAY_ADDRESS` names, else a new local instance; "auto": the running cluster `ray start` made on this
    machine; "HOST:PORT" or "ray://HOST:10001")."""

    replicas: int | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        if self.replicas is not None and self.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {self.replicas}")


def import_ray() -> ModuleType:
    """`ray`, or a ConfigError naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which is not installed here: {RAY_EXTRA}") from exc
    return ray


AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")  # a user's choice of Ray auth


def instance_token() -> None:
    """Before starting a local Ray instance: Ray's token authentication (its default) with a token for this
    process's instances, in the environment its processes inherit, instead of one Ray would generate into
    ~/.ray/auth_token (outside any output folder). Kept where the user set Ray's own variables."""
    if not any(os.environ.get(var) for var in AUTH_VARS):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def check_executor(backend_name: str, options: dict[str, Any]) -> None:
    """Refused before any directory exists or any model loads: a backend with no engine to replicate, the
    engine count given twice, or no Ray installed."""
    if backend_name in LOCAL_ONLY:
        raise ConfigError(f"--executor ray replicates a local model engine (hf, vllm); the {backend_name} "
                          "backend has none (API backends run --concurrency requests at once themselves)")
    if int(options.get("data_parallel_size", 1) or 1) > 1:
        raise ConfigError("--executor ray: give the number of engines as --replicas, not as the vllm option "
                          "data_parallel_size")
    import_ray()


def engine_ref(name: str) -> str:
    """What a replica builds its engine from: a built-in's registry name (imported in the actor only), else
    the plugin class as "module:Class" (a plugin registered in this process need not be registered there)."""
    from medharness.backends import OPTIONS

    if name in OPTIONS:
        return name
    cls = BACKENDS.get(name)
    return f"{cls.__module__}:{cls.__qualname__}"


def gpus_per_replica(name: str, options: dict[str, Any]) -> float:
    """GPUs one engine needs where the cluster has any: vllm's tensor_parallel_size, none on device=cpu."""
    if str(options.get("device", "auto")) == "cpu":
        return 0.0
    if name == "vllm":
        return float(options.get("tensor_parallel_size", 1) or 1)
    return 1.0


class Replica:
    """One engine in a Ray actor process (made a Ray actor class by `ray.remote` in `RayReplicas`)."""

    def __init__(self, engine: str, model: str, options: dict[str, Any]) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        self.backend: Backend | None = None
        self.failure: Exception | None = None
        try:
            if ":" in engine:
                module, _, attr = engine.partition(":")
                cls = getattr(importlib.import_module(module), attr)
            else:
                cls = BACKENDS.get(engine)
            self.backend = cls(model, **options)
        except Exception as exc:  # noqa: BLE001 - raised by `describe`: Ray keeps a method's exception as
            self.failure = exc  # it was, a constructor's only as text (and would not restart such an actor)

    def _engine(self) -> Backend:
        if self.backend is None:  # also a restarted replica that could not load the model again
            raise self.failure or BackendError("the replica has no engine")
        return self.backend

    def describe(self) -> dict[str, Any]:
        b = self._engine()
        return {"fingerprint": b.fingerprint, "needs_images": b.needs_images, "cacheable": b.cacheable,
                "batch": max(b.batch_size_hint, int(getattr(b, "batch_size", 1))),
                "attn_implementation": getattr(b, "attn_implementation", None)}

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        return self._engine().generate(requests)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def _connect(ray: ModuleType, address: str | None) -> bool:
    """Join the cluster (or start a local instance); True when this call started or joined it (so `close`
    leaves it), False when this process had already joined one (a test's or a notebook's: left running)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # a new local instance, even where `ray start` runs one (joined only by --ray-address auto); Ray
        # writes its session under /tmp/ray
        address, kwargs["include_dashboard"] = "local", False
    if address == "local":
        instance_token()
    ray.init(address=address, **kwargs)
    return True


def _plan(ray: ModuleType, replicas: int | None, gpus_each: float) -> tuple[int, float, float]:
    """(replicas, CPUs each, GPUs each) on the cluster as it is now: refused if they do not fit, as Ray would
    otherwise wait for resources that never come."""
    total = ray.cluster_resources()
    gpus, cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
    if gpus and gpus_each:
        n = replicas or int(gpus // gpus_each)
        if n < 1 or n * gpus_each > gpus:
            raise ConfigError(f"--executor ray: {n or 1} replica(s) x {gpus_each:g} GPU(s) each do not fit "
                              f"the Ray cluster's {gpus:g} GPU(s)")
        return n, 1.0, gpus_each
    n = replicas or 1
    if n > cpus:
        raise ConfigError(f"--executor ray: {n} replicas need a CPU each; the Ray cluster has {cpus:g}")
    node_cpus = max((float(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")),
                    default=cpus)
    return n, float(max(1, min(int(cpus // n), int(node_cpus)))), 0.0  # CPU engines share the cores out


class RayReplicas(Backend):
    """N replicas of the backend `engine` (a registry name) of `model`, each a Ray actor owning one engine."""

    name = "ray"

    def __init__(self, engine: str, model: str, options: dict[str, Any],
                 executor: RayExecutor | None = None) -> None:
        super().__init__(model, **options)
        executor = executor or RayExecutor()
        check_executor(engine, options)
        self.ray = import_ray()
        self.actors: list[Any] = []
        self.group: Any = None
        self._joined = _connect(self.ray, executor.address)
        try:
            n, cpus, gpus = _plan(self.ray, executor.replicas, gpus_per_replica(engine, options))
            self.group = self._reserve(n, cpus, gpus)
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            ref = engine_ref(engine)
            for i in range(n):
                place = PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=i)
                actor = self.ray.remote(Replica).options(num_cpus=cpus, num_gpus=gpus, max_restarts=RESTARTS,
                                                         max_task_retries=RESTARTS, scheduling_strategy=place)
                self.actors.append(actor.remote(ref, model, options))
            infos = [self._get(a.describe.remote()) for a in self.actors]
            prints = sorted({i["fingerprint"] for i in infos})
            if len(prints) > 1:  # e.g. nodes holding different weights at the same path
                raise BackendError(f"the {n} Ray replicas of {model!r} load different models: "
                                   f"{', '.join(prints)}")
            info = infos[0]
            self._fingerprint = str(info["fingerprint"])
            self.needs_images = bool(info["needs_images"])  # type: ignore[misc]  # the engine's, per instance
            self.cacheable = bool(info["cacheable"])  # type: ignore[misc]
            self.attn_implementation = info["attn_implementation"]
            self.batch = int(info["batch"])
        except BaseException:
            self.close()
            raise
        log.info("%d Ray replica(s) of %s (%g CPU, %g GPU each)", n, self._fingerprint, cpus, gpus)

    def _reserve(self, n: int, cpus: float, gpus: float) -> Any:
        """A placement group holding all `n` replicas' resources at once: runs sharing a cluster wait for
        their whole share, never hold part of it each while waiting for the rest (a deadlock)."""
        from ray.util.placement_group import placement_group

        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
        group = placement_group([bundle] * n, strategy="PACK")
        ready, _ = self.ray.wait([group.ready()], timeout=10)
        if not ready:
            log.warning("waiting for the Ray cluster to free %d x %s for the replicas (others hold them)",
                        n, bundle)
            self.ray.get(group.ready())
        return group

    @property
    def replicas(self) -> int:
        return len(self.actors)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def batch_size_hint(self) -> int:
        return self.batch * max(1, self.replicas)

    def _get(self, ref: Any) -> Any:
        """The result of a replica's call; a replica's failure as the error it raised (a MedHarnessError as
        itself, e.g. a model that cannot load) or as a BackendError."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            cause: Any = getattr(exc, "cause", None)
            while getattr(cause, "cause", None) is not None and not isinstance(cause, MedHarnessError):
                cause = cause.cause  # a RayTaskError inside: the exception the replica raised
            if isinstance(cause, MedHarnessError):
                raise cause from None
            if isinstance(cause, Exception):
                raise BackendError(f"a Ray replica failed: {type(cause).__name__}: {cause}") from None
            if isinstance(exc, self.ray.exceptions.RayActorError):
                raise BackendError(f"a Ray replica died and could not be restarted (it may die {RESTARTS} "
                                   f"times): {exc}") from None
            raise BackendError(f"a Ray replica failed: {exc}") from None

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Chunks of the engine's batch to whichever replica is free; answers in request order."""
        chunks = [list(requests[i: i + self.batch]) for i in range(0, len(requests), self.batch)]
        results: list[list[Generation]] = [[] for _ in chunks]
        free = list(range(len(self.actors)))
        pending: dict[Any, tuple[int, int]] = {}
        following = 0
        while following < len(chunks) or pending:
            while free and following < len(chunks):
                replica = free.pop(0)
                pending[self.actors[replica].generate.remote(chunks[following])] = (following, replica)
                following += 1
            (done,), _ = self.ray.wait(list(pending), num_returns=1)
            index, replica = pending.pop(done)
            results[index] = self._get(done)
            free.append(replica)
        return [g for chunk in results for g in chunk]

    def close(self) -> None:
        """Close each engine, end the actors, and leave the cluster this backend joined."""
        for actor in self.actors:
            try:
                self.ray.get(actor.close.remote(), timeout=60)
            except Exception as exc:  # noqa: BLE001 - already dead or stuck: killed below
                log.debug("ray replica close: %s", exc)
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.group)
            self.group = None
        if getattr(self, "_joined", False):
            self.ray.shutdown()
            self._joined = False
