"""`medharness run` as a whole process against the same run in a process that has already imported everything
(a script, not a test): prints a Markdown table.

The run: the tiny model (`make-tiny-model --size small`, built offline) on N phantom_presence samples with the
`hf` backend, `--no-cache` (every answer generated). Each repeat, interleaved:
- `process`: `medharness run ...` started fresh: interpreter start, imports, the run, exit;
- `in process`: a Python process that imports `medharness.cli`, runs once (warm-up: imports of the backend's
  libraries, first model load), then times the same `main([...])` call again (model load, generation,
  scoring and writing included: what a caller that keeps its process pays).
- `imports only`: a fresh process that imports what the hf backend needs (torch, torchvision, transformers'
  auto classes) and does nothing else: the floor of any process that generates with transformers.
The issue's target: the whole process within 1.5x of the in-process time.

Usage: python bench/run_process.py [--limit 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
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

DRIVER = """
import json, shutil, sys, time
t0 = time.perf_counter()
from medharness.cli import main
t1 = time.perf_counter()
argv = json.loads(sys.argv[1])
out = argv[argv.index("--output") + 1]
assert main(argv) == 0
shutil.rmtree(out)
t2 = time.perf_counter()
assert main(argv) == 0
t3 = time.perf_counter()
print(json.dumps({"import_cli": t1 - t0, "first": t2 - t1, "warm": t3 - t2}))
"""

# the hf backend's third-party imports (the shim: a CUDA torchvision next to CPU torch, as on this machine)
IMPORTS_ONLY = """
from medharness.core.torchvision_shim import ensure_torchvision_importable
ensure_torchvision_importable()
import torch, torchvision
from transformers import AutoModelForImageTextToText, AutoProcessor
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    program = [sys.executable, "-m", "medharness.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny-small"
        subprocess.run([*program, "make-tiny-model", str(model), "--size", "small"], check=True,
                       capture_output=True)
        process, warm, first, floor = [], [], [], []
        for i in range(args.repeat):
            argv = ["run", "--model", str(model), "--tasks", "phantom_presence", "--limit", str(args.limit),
                    "--no-cache", "--output", str(Path(tmp) / f"p{i}")]
            t0 = time.perf_counter()
            subprocess.run([*program, *argv], check=True, capture_output=True)
            process.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", IMPORTS_ONLY], check=True, capture_output=True)
            floor.append(time.perf_counter() - t0)
            argv[-1] = str(Path(tmp) / f"w{i}")
            done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argv)], check=True,
                                  capture_output=True, text=True)
            times = json.loads(done.stdout.strip().splitlines()[-1])
            warm.append(times["warm"])
            first.append(times["first"])
    p, w, f = statistics.median(process), statistics.median(warm), statistics.median(floor)
    c = statistics.median(first)
    rows = [[f"`medharness run` ({args.limit} samples, tiny model, hf, --no-cache)", f"{p:.2f} s",
             f"{w:.2f} s", f"{c:.2f} s", f"{p / w:.2f}x", f"{p / c:.2f}x", f"{f:.2f} s ({f / w:.2f}x)"]]
    print(tabulate(rows, headers=["", "process", "in process (warm)", "in process (first call)",
                                  "process / warm", "process / first call", "imports only (/ warm)"],
                   tablefmt="github"))
    print(f"\nmedians of {args.repeat}, interleaved; cores: {os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
