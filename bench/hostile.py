"""How fast `medharness validate` refuses each hostile task file of the fuzz corpus (a script, not a test):
prints a Markdown table of the slowest files, and the issue's alias bomb in a subprocess under a 1 GiB
address-space limit. The tests assert that each file is refused with a named error; the time is measured here.
Usage: python bench/hostile.py [--top 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

FUZZ = Path(__file__).resolve().parent.parent / "tests" / "data" / "fuzz"


def alias_bomb(levels: int = 10, width: int = 9) -> str:
    lines = ["a0: &a0 [x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    from medharness.cli import main as cli

    with contextlib.redirect_stdout(io.StringIO()):
        cli(["validate", str(next(iter(sorted(FUZZ.glob("*.yaml")))))])  # warm imports outside the timings
    times = []
    for path in sorted(FUZZ.glob("*.yaml")):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = cli(["validate", str(path)])
        times.append((time.perf_counter() - start, path.name, rc))
    times.sort(reverse=True)
    rows = [[name, f"{dt * 1000:.1f} ms", rc] for dt, name, rc in times[: args.top]]
    with tempfile.TemporaryDirectory() as tmp:
        bomb = Path(tmp) / "bomb.yaml"
        bomb.write_text("name: bomb\n" + alias_bomb())
        script = ("import resource, sys, time\nresource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
                  "from medharness.cli import main\nimport medharness.taskfiles.task, medharness.cli_output\n"
                  f"t = time.perf_counter(); rc = main(['validate', {str(bomb)!r}])\n"
                  "print(f'{time.perf_counter() - t:.4f}', rc)")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                             text=True, check=False).stdout
        dt, rc = out.strip().splitlines()[-1].split()
        rows.insert(0, [f"alias bomb ({bomb.stat().st_size} bytes, 1 GiB limit)",
                        f"{float(dt) * 1000:.1f} ms", rc])
    print(f"{len(times)} hostile task files; total {sum(t for t, _, _ in times):.2f} s\n")
    print(tabulate(rows, headers=["file (slowest first)", "validate", "exit"], tablefmt="github"))


if __name__ == "__main__":
    main()
