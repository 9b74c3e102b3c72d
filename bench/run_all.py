"""Benchmarks of the spine (a script, not a test): prints a Markdown table.

1. scoring throughput: parse + score + summarise 100k VQA rows (no model, no images);
2. run overhead per sample on top of the backend's own time (baseline and, if transformers is
   installed, a tiny Qwen2-VL built offline), measured by timing inside Backend.generate;
3. `medharness --help` start-up time (median of 5 fresh processes).
Usage: python bench/run_all.py [--rows 100000] [--skip-hf]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def bench_scoring(n_rows: int) -> list[list[object]]:
    from medharness.core.records import Generation, ResultRow, Sample
    from medharness.scoring.recipe import rescore, summarise
    from medharness.taskfiles.task import load_task, recipe_for

    task = load_task("vqa_rad")
    answers = ["yes", "no", "Yes.", "left lung", "The answer is no", "mri", "yes or no", "<answer>x</answer>"]
    golds = ["yes", "no", "yes", "left lung", "no", "ct", "yes", "x"]
    rows = []
    for i in range(n_rows):
        k = i % len(answers)
        sample = Sample(id=str(i), task="vqa_rad", question="q?", target=golds[k],
                        meta={"answer_type": "CLOSED" if golds[k] in ("yes", "no") else "OPEN"})
        gen = Generation(sample_id=str(i), text=answers[k])
        rows.append(ResultRow(task="vqa_rad", task_version="1", sample=sample, prompt_hash="", generation=gen,
                              answer={"value": None}, scores={}))
    out = []
    for convention in ("harness", "mumc", "llava_med"):
        recipe = recipe_for(task, convention)
        t0 = time.perf_counter()
        scored = rescore(rows, recipe)
        summarise(scored, recipe, ["answer_type"], "vqa_rad", "1")
        dt = time.perf_counter() - t0
        out.append([f"score {n_rows:,} rows ({convention})", f"{dt:.2f} s", f"{n_rows / dt:,.0f} rows/s"])
    return out


def bench_overhead(model: str, tasks: str, limit: int, label: str, batch_size: int = 8) -> list[object]:
    from medharness.runs import pipeline
    from medharness.runs.pipeline import RunConfig, Runner, make_backend

    backend_time = 0.0

    def timed_make_backend(config: RunConfig):  # type: ignore[no-untyped-def]
        backend = make_backend(config)
        inner = backend.generate

        def generate(requests):  # type: ignore[no-untyped-def]
            nonlocal backend_time
            t0 = time.perf_counter()
            result = inner(requests)
            backend_time += time.perf_counter() - t0
            return result

        backend.generate = generate  # type: ignore[method-assign]
        return backend

    import sklearn.metrics  # noqa: F401 - a one-time 3-4 s import (QWK) is not per-sample overhead

    pipeline.make_backend = timed_make_backend  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = RunConfig(model=model, tasks=tasks, limit=limit, batch_size=batch_size)
            t0 = time.perf_counter()
            runner = Runner(config, output=Path(tmp) / "run")
            setup = time.perf_counter() - t0
            t1 = time.perf_counter()
            run = runner.run()
            total = time.perf_counter() - t1
            n = sum(len(run.rows(t)) for t in run.tasks())
    finally:
        pipeline.make_backend = make_backend
    per_sample_ms = (total - backend_time) / n * 1000
    return [f"run overhead ({label}, {n} samples)", f"{total:.2f} s total, {backend_time:.2f} s in backend",
            f"{per_sample_ms:.2f} ms/sample overhead (task load {setup:.2f} s)"]


def bench_help() -> list[object]:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medharness.cli", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return ["`medharness --help` start-up", f"{statistics.median(times) * 1000:.0f} ms median of 5", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args()
    table = bench_scoring(args.rows)
    table.append(bench_overhead("baseline:majority", "phantom", 200, "baseline, 5 phantom tasks"))
    if not args.skip_hf:
        try:
            from medharness.checkpoints.tiny import build_tiny_vlm
        except ImportError:
            print("transformers missing: skipping the hf overhead row", file=sys.stderr)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = build_tiny_vlm(Path(tmp) / "tiny", arch="qwen2_vl")
                table.append(bench_overhead(str(path), "phantom_presence", 64, "hf tiny qwen2_vl, batch 8"))
    table.append(bench_help())
    print(tabulate(table, headers=["benchmark", "measured", "rate"], tablefmt="github"))


if __name__ == "__main__":
    main()
