"""The Ray path's overhead (`run --executor ray`) against an in-process run of the same CPU work (a script,
not a test): prints Markdown tables.

The run: the tiny model (`make-tiny-model`, `--size`, built offline) on the first N phantom_presence samples
with the `hf` backend, greedy, `--no-cache` (every answer generated), `--batch-size` 8. Every engine runs
torch on `--threads` threads (1: OMP_NUM_THREADS, set before torch is imported and before Ray starts, so
that the replicas inherit it), the same CPU work per engine whichever way it runs; two OpenMP threads on
cores other processes are busy on slow down by up to 12x (docs/benchmarks.md), which would swamp the rest.
Contenders, timed in interleaved rounds (one run of each per round, the order reversed every other round)
after one untimed warm-up of each:
- `local`: `Runner.run()` in this process;
- `ray x1`: the same run with `executor=RayExecutor(replicas=1)`: one replica actor: the Ray path's overhead;
- `ray x2`: `RayExecutor(replicas=2)`: two replica actors, each on its own core.
Each run is split into `start` (building the backend: the model load in process; on Ray, starting the actors,
their imports of torch and transformers, and the model load in each), `generate` (time inside
`Backend.generate`, the pipeline's own `generate_s`: for Ray the round trips, request and answer
serialisation and the replicas' work) and the rest (tasks, images, scoring, writing). Ray's own start (a
local instance, `ray.init`) is paid once per process and reported apart. The rows of every run are compared
byte for byte with the first local run's.

Usage: python bench/ray_eval.py [--n 256] [--repeats 3] [--max-new-tokens 16] [--size tiny] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TASK = "phantom_presence"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", choices=["tiny", "small"], default="tiny")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each engine")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch (here and in the replicas) starts
    load = os.getloadavg()[0]

    import ray

    from medharness.backends.ray_replicas import RayExecutor
    from medharness.checkpoints.tiny import build_tiny_vlm
    from medharness.runs import pipeline
    from medharness.runs.pipeline import RunConfig, Runner

    starts: list[float] = []
    build = pipeline.make_backend

    def timed_backend(config: Any, executor: Any = None) -> Any:
        began = time.perf_counter()
        backend = build(config, executor)
        starts.append(time.perf_counter() - began)
        return backend

    pipeline.make_backend = timed_backend  # the Runner builds its backend through it: its start is timed

    with tempfile.TemporaryDirectory(prefix="ray-eval-") as tmp:
        root = Path(tmp)
        model = build_tiny_vlm(root / "model", size=args.size)
        config = RunConfig(model=str(model), backend="hf", tasks=TASK, limit=args.n,
                           batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, cache=False)
        began = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
        ray_start = time.perf_counter() - began

        contenders: dict[str, Callable[[Path], Runner]] = {
            "local": lambda out: Runner(config, output=out),
            "ray x1": lambda out: Runner(config, output=out, executor=RayExecutor(replicas=1)),
            "ray x2": lambda out: Runner(config, output=out, executor=RayExecutor(replicas=2)),
        }
        times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
        reference: bytes | None = None
        same: dict[str, bool] = {name: True for name in contenders}
        names = list(contenders)
        for round_ in range(args.repeats + 1):  # round 0: the untimed warm-up
            for name in names if round_ % 2 else names[::-1]:
                out = root / "runs" / f"{name.replace(' ', '')}-{round_}"
                runner = contenders[name](out)
                began = time.perf_counter()
                runner.run()
                wall = time.perf_counter() - began
                rows = (out / "samples" / f"{TASK}.jsonl").read_bytes()
                reference = reference if reference is not None else rows
                same[name] &= rows == reference
                if round_:
                    times[name].append((wall, starts[-1], runner.generate_s))
                shutil.rmtree(out)
        ray.shutdown()

    def median(name: str, i: int) -> float:
        return statistics.median(t[i] for t in times[name])

    def spread(name: str, i: int) -> str:
        values = [t[i] for t in times[name]]
        return f"{statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}]"

    table = []
    for name in contenders:
        rest = [w - s - g for w, s, g in times[name]]
        table.append([name, spread(name, 0), spread(name, 1), spread(name, 2),
                      f"{statistics.median(rest):.2f} s", f"{median(name, 0) / median('local', 0):.2f}x",
                      f"{median(name, 2) / median('local', 2):.2f}x", "yes" if same[name] else "NO"])
    print(f"\n{args.n} {TASK} samples, tiny model ({args.size}), hf, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, --no-cache; {os.cpu_count()} cores, {args.threads} torch "
          f"thread(s) per engine; medians of {args.repeats} (min-max), interleaved; 1-minute load at the "
          f"start: {load:.2f}\n")
    print(tabulate(table, headers=["", "wall", "start", "generate", "rest", "wall / local",
                                   "generate / local", "rows = local"], tablefmt="github"))
    print(f"\nRay's own start (a local instance, ray.init, once per process): {ray_start:.2f} s")


if __name__ == "__main__":
    main()
