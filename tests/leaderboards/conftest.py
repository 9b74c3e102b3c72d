"""Run directories for the board tests, made by really running the baselines on the phantom tasks (once per
module that asks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medharness.cli import main

TASKS = "phantom_presence,phantom_count"
N = 60


def run(out: Path, model: str, *extra: str, tasks: str = TASKS, limit: int = N) -> Path:
    assert main(["run", "--model", model, "--tasks", tasks, "--limit", str(limit), "--output", str(out),
                 "--no-progress", "--no-cache", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def phantom_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/runs/{majority, constant_no, random_s0, random_s1, random_s2}: baselines on two phantom tasks."""
    root = tmp_path_factory.mktemp("boards")
    runs = root / "runs"
    run(runs / "majority", "baseline:majority")
    run(runs / "constant_no", "baseline:constant:no")
    for seed in range(3):
        run(runs / f"random_s{seed}", "baseline:random", "--seed", str(seed))
    return root
