"""`train-then-eval --executor ray` (trainers/sweeps/ray_executor.py) on a real local Ray instance (2 CPUs and
one logical GPU), each cell's command replaced by a fake that records when and where it ran: one Ray task per
cell, a `from:` cell after its parent, a failed cell failing only its descendants, GPUs declared from the
launch settings, the merge only when all finished, finished cells not started again. Without Ray: the
missing extra, the refused options, and the guard that ends a task's process group with its Ray worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medharness.cli import main
from medharness.trainers.sweeps import cli as sweep_cli
from medharness.trainers.sweeps import ray_executor, slurm
from medharness.trainers.sweeps import stages as sweep_stages
from medharness.trainers.sweeps.stages import Stages

SWEEP = """\
name: chain
model: tiny
tasks: [phantom_presence]
seeds: [0, 1]
recipes:
  - sft
  - {recipe: grpo, from: sft}
common_presets: [tiny_cpu]
max_steps: 2
eval: {limit: 2, batch_size: 2}
baselines: [majority]
"""
SFT0, SFT1 = "sft-phantom_presence-kall-s0", "sft-phantom_presence-kall-s1"
GRPO0, GRPO1 = "grpo-from-sft-phantom_presence-kall-s0", "grpo-from-sft-phantom_presence-kall-s1"
ALL = ["reference-base", "reference-baseline-majority", SFT0, SFT1, GRPO0, GRPO1]

# the cell command's stand-in: records itself, sleeps (the second SFT cell longer: a child that did not wait
# for it would start while it runs), fails where told, else marks its cell finished
FAKE_CELL = f"""\
import json, os, sys, time
from pathlib import Path

fail, args = sys.argv[1].split(","), sys.argv[2:]
cell, out = args[args.index("--cell") + 1], Path(args[args.index("--output") + 1])
record = {{"cell": cell, "start": time.time(), "pid": os.getpid(), "sid": os.getsid(0),
          "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "argv": args}}
time.sleep(3.0 if cell == "{SFT1}" else 0.3)
record["end"] = time.time()
with (out / "fake-calls.jsonl").open("a") as fh:
    fh.write(json.dumps(record) + "\\n")
if cell in fail:
    print("the cell broke")
    sys.exit(3)
(out / "done").mkdir(exist_ok=True)
(out / "done" / cell).touch()
"""


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """One local Ray instance for the module: 2 CPUs, two logical GPUs (a resource count; nothing uses it)."""
    ray = pytest.importorskip("ray")
    import logging

    with pytest.MonkeyPatch.context() as mp:  # a token for this instance only: nothing written to ~/.ray
        mp.setenv("RAY_AUTH_TOKEN", "medharness-test-" + "0" * 32)
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, object_store_memory=100 * 1024**2)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture()
def fake_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The fake cell command as the tasks' program; finished = the fake's marker; the merge recorded."""
    program = tmp_path / "fake_cell.py"
    program.write_text(FAKE_CELL)
    setup: dict[str, Any] = {"fail": "", "merged": []}
    monkeypatch.setattr(sweep_stages, "PROGRAM", [sys.executable, str(program), "-"])
    monkeypatch.setattr(Stages, "cell_finished", lambda self, cell: (self.root / "done" / cell.id).exists())
    monkeypatch.setattr(slurm, "reference_finished",
                        lambda stages, name: (stages.root / "done" / f"reference-{name}").exists())

    def run_all(sweep: Any, file: Path, stages: Stages, cells: Any, references: Any) -> int:
        setup["merged"].append(sorted(p.name for p in (stages.root / "done").iterdir()))
        return 0

    monkeypatch.setattr(sweep_cli, "run_all", run_all)  # the local --resume (tested in test_cli.py)
    return setup


def fail_cells(monkeypatch: pytest.MonkeyPatch, *cells: str) -> None:
    program = sweep_stages.PROGRAM
    monkeypatch.setattr(sweep_stages, "PROGRAM", [*program[:2], ",".join(cells) or "-"])


def fake_calls(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "fake-calls.jsonl").read_text().splitlines()]


def test_cells_run_as_ray_tasks_in_dependency_order(ray_instance: Any, fake_cells: dict[str, Any],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP)
    fail_cells(monkeypatch, SFT0)
    argv = ["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "ray"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    calls = {c["cell"]: c for c in fake_calls(out)}
    assert set(calls) == set(ALL) - {GRPO0}  # the failed cell's child never ran; everything else once
    assert len(fake_calls(out)) == 5
    assert calls[GRPO1]["start"] >= calls[SFT1]["end"]  # a from: cell starts after its parent ended
    # each command ran the cell's --print-commands command, in a session of its own (the guard's)
    for cell, call in calls.items():
        assert call["argv"][-3:] == ["--cell", cell, "--resume"] and call["argv"][:5] == [
            "train-then-eval", "--sweep", str(file), "--output", str(out)]
        assert call["sid"] != os.getsid(0) and call["pid"] != os.getpid()
    tasks = {t["name"]: t for t in json.loads((out / "ray" / "tasks.json").read_text())}
    assert list(tasks) == ALL
    ran = [t for name, t in tasks.items() if name != GRPO0]
    assert len({t["task_id"] for t in ran}) == 5 and all(t["worker_pid"] != os.getpid() for t in ran)
    assert tasks[GRPO1]["after"] == [SFT1] and tasks[SFT1]["after"] == []
    assert tasks[GRPO1]["started"] >= tasks[SFT1]["ended"]
    # GPUs: a cell's (1, no launch:), the base model's evaluation (1), a baseline none; Ray hands them out
    assert {n: t["gpus"] for n, t in tasks.items()} == {**dict.fromkeys(ALL, 1),
                                                        "reference-baseline-majority": 0}
    assert calls[SFT1]["cuda"] in ("0", "1") and calls["reference-base"]["cuda"] in ("0", "1")
    assert not calls["reference-baseline-majority"]["cuda"]
    assert "the cell broke" in (out / "ray" / "logs" / f"{SFT0}.log").read_text()
    # the failure and its descendant are named; no merge ran; the board of what finished is written
    assert f"{SFT0}: exited with 3" in captured.err
    assert f"{GRPO0}: not run: its parent {SFT0} failed" in captured.err
    assert f"2 cell(s) failed: {SFT0}, {GRPO0}" in captured.err
    assert fake_cells["merged"] == []
    record = json.loads((out / "sweep.json").read_text())
    assert list(record["failed"]) == [SFT0, GRPO0] and (out / "leaderboard.md").is_file()

    # again: only the two unfinished cells start (finished ones are not even submitted); then the merge
    fail_cells(monkeypatch)
    assert main([*argv, "--resume"]) == 0
    assert [c["cell"] for c in fake_calls(out)[5:]] == [SFT0, GRPO0]
    assert [t["name"] for t in json.loads((out / "ray" / "tasks.json").read_text())] == [SFT0, GRPO0]
    assert fake_cells["merged"] == [sorted(ALL)]
    assert "2 Ray task(s) finished; merging" in capsys.readouterr().out
    # all finished: nothing starts, the merge only
    assert main([*argv, "--resume"]) == 0
    assert len(fake_calls(out)) == 7 and len(fake_cells["merged"]) == 2


def test_a_task_larger_than_any_node_is_refused(ray_instance: Any, fake_cells: dict[str, Any],
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP + "launch: {launcher: accelerate, num_processes: 4}\n")
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "nothing started" in err and f"{SFT0} (4 GPU(s), 4 CPU(s))" in err
    assert "reference-base" not in err  # the base model's evaluation asks for 1
    assert not (out / "fake-calls.jsonl").exists()


def test_a_missing_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "ray"]) == 2
    assert "--executor ray needs Ray" in capsys.readouterr().err
    assert "pip install 'medharness[ray]'" in ray_executor.EXTRA
    assert not out.exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--slurm-option", "partition=gpu"], "--slurm-option needs --executor slurm"),
    (["--executor", "ray", "--cell", SFT0], "leave out --cell"),
    (["--executor", "ray", "--dry-run"], "leave out --cell, --dry-run"),
])
def test_refused_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str],
                         message: str) -> None:
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP)
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), *options]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


PARENT = """\
import subprocess, sys, time
import os
guard = [sys.executable, "-m", "medharness.trainers.sweeps.ray_executor", str(os.getpid())]
proc = subprocess.Popen([*guard, sys.executable, "-c", sys.argv[1]], start_new_session=True)
print(proc.pid, flush=True)
time.sleep(60)
"""
# the cell command: a child of its own, and a grandchild that left for a session of its own would escape
TREE = textwrap.dedent("""\
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(child.pid, flush=True)
    time.sleep(60)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_guard_ends_the_cell_command_with_its_worker(tmp_path: Path) -> None:
    """The Ray worker killed (the driver killed, the instance gone): the guard takes the cell command and
    every process it started with it, so a resumed sweep never meets a stray stage."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, TREE], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    guard_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    group: list[int] = []
    while time.monotonic() < deadline and len(group) < 3:  # the guard, the command, the command's child
        group = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == guard_pid]
        time.sleep(0.1)
    assert len(group) == 3
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    while time.monotonic() < deadline and any(_alive(p) for p in group):
        time.sleep(0.1)
    assert not any(_alive(p) for p in group)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
