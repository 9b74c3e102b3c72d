"""A sweep's fixed costs (a benchmark, not a test): `medharness train-then-eval` on the shipped demo (what
`make demo` runs), its stages forked by the stage worker against each stage a fresh subprocess
(`MEDHARNESS_SWEEP_STAGES=subprocess`, the way every stage ran before the worker), interleaved.

Per run: the wall time of the whole command (its own start and exit included), the time in training (the sum
of train.json `seconds`: model load, the steps, the final save) and in generation (the sum of run.json
`usage.generate_s`), and the rest, the fixed overhead (process starts, imports, exits, task loading, scoring,
writing); and the CPU time of the command and every process under it (less sensitive than wall time to
other work on a shared machine). Each run gets a fresh sweep folder and a fresh response cache (nothing is
answered from an earlier run). Prints a Markdown table: the median of each mode, then every run; and checks
that every run's board equals the first run's.

Usage: python bench/sweep_fixed_costs.py [--repeat 3] [--modes fork,subprocess] [--sweep FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate


def board_rows(folder: Path) -> list[str]:
    """The leaderboard's table rows (its first table)."""
    lines = (folder / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.startswith("| ")]


def one_run(mode: str, sweep: Path | None, work: Path, index: int) -> dict[str, Any]:
    out, cache = work / f"{mode}-{index}", work / f"cache-{mode}-{index}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MEDHARNESS_CACHE": str(cache), "MEDHARNESS_SWEEP_STAGES": mode}
    argv = [sys.executable, "-m", "medharness.cli", "train-then-eval", "--output", str(out)]
    argv += ["--sweep", str(sweep)] if sweep else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run {index} exited with {done.returncode}:\n{done.stdout[-3000:]}")
    train = sum(json.loads(p.read_text())["seconds"] for p in out.glob("cells/*/train/train.json"))
    generate = sum(json.loads(p.read_text())["usage"]["generate_s"] for p in out.rglob("run.json"))
    fixed = wall - train - generate
    return {"mode": mode, "run": index, "wall": wall, "train": train, "generate": generate, "fixed": fixed,
            "cpu": cpu, "board": board_rows(out)}


def row(label: str, runs: list[dict[str, Any]]) -> list[object]:
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "train", "generate", "fixed", "cpu")}
    share = statistics.median(r["fixed"] / r["wall"] for r in runs)
    return [label, f"{med['wall']:.1f} s", f"{med['train']:.1f} s", f"{med['generate']:.1f} s",
            f"{med['fixed']:.1f} s", f"{100 * share:.0f} %", f"{med['cpu']:.1f} s"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--modes", default="fork,subprocess", help="comma-separated: fork, subprocess")
    p.add_argument("--sweep", type=Path, help="a sweep file (default: the shipped demo)")
    args = p.parse_args()
    modes = args.modes.split(",")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for index in range(args.repeat):
            for mode in modes:  # interleaved: a load change on a shared machine hits both modes alike
                runs.append(one_run(mode, args.sweep, Path(tmp), index))
                print(f"{mode} {index}: {runs[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    headers = ["stages", "wall", "training", "generation", "fixed overhead", "overhead share", "CPU time"]
    table = [row(f"{mode} (median of {args.repeat})", [r for r in runs if r["mode"] == mode])
             for mode in modes]
    table += [row(f"{r['mode']} run {r['run']}", [r]) for r in runs]
    print(tabulate(table, headers=headers, tablefmt="github"))
    same = all(r["board"] == runs[0]["board"] for r in runs)
    print(f"\nboards: {'every run equals the first' if same else 'DIFFER between runs'}")
    print("\n".join(runs[0]["board"]))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
