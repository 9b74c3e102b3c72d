"""`train-then-eval --executor ray` (trainers/sweeps/ray_executor.py) on a real local Ray instance (2 CPUs and
two logical GPUs), each cell's command replaced by a fake that records when and where it ran: one Ray task per
cell, a `from:` cell after its parent, a failed cell failing only its descendants, GPUs declared from the
launch settings, the merge only when all finished, finished cells not started again. Without Ray: the
missing extra, the refused options, and the guard that ends a task's process group with its Ray worker.
Slow: the demo sweep (tiny settings) on Ray, its driver killed mid-sweep and resumed, against the local
executor's board and answers."""

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
from chain_sweep import ALL, GRPO0, GRPO1, SFT0, SFT1, SWEEP  # tests/support

from medharness.cli import main
from medharness.trainers.sweeps import cli as sweep_cli
from medharness.trainers.sweeps import slurm
from medharness.trainers.sweeps import stages as sweep_stages
from medharness.trainers.sweeps.stages import Stages

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

    # the suite's one token (tests/conftest.py): every Ray instance of the test process has it
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
    assert "2 task(s) finished; merging" in capsys.readouterr().out
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
    err = capsys.readouterr().err
    assert "--executor ray needs Ray" in err and "pip install 'medharness[ray]'" in err, err
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
import os, subprocess, sys, time
guard = [sys.executable, "-m", "medharness.trainers.sweeps.ray_executor", str(os.getpid()), "2"]
proc = subprocess.Popen([*guard, sys.executable, "-c", sys.argv[1]], start_new_session=True)
print(proc.pid, flush=True)
time.sleep(60)
"""
# the cell command, with a child of its own (as its stage worker and stage)
TREE = textwrap.dedent("""\
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(60)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("killed", ["worker", "guard"])
def test_the_guard_ends_the_cell_command_with_its_worker(tmp_path: Path, killed: str) -> None:
    """The Ray worker killed (the driver killed, the instance gone), or the outer guard killed by SIGKILL (as
    Ray kills an ended worker's children): the cell command and every process it started end too, so a
    resumed sweep never meets a stray stage."""
    worker = subprocess.Popen([sys.executable, "-c", PARENT, TREE], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    outer = int(worker.stdout.readline())
    deadline = time.monotonic() + 60
    group: list[int] = []
    while time.monotonic() < deadline and len(group) < 4:  # two guards, the command, the command's child
        group = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == outer]
        time.sleep(0.1)
    assert len(group) == 4
    os.kill(worker.pid if killed == "worker" else outer, signal.SIGKILL)
    while time.monotonic() < deadline and any(_alive(p) for p in group):
        time.sleep(0.1)
    assert not any(_alive(p) for p in group)
    worker.kill()
    worker.wait()


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


# -- the demo sweep, for real -----------------------------------------------------------------------------

def tiny_demo(path: Path) -> Path:
    """The shipped demo sweep (what `make demo` runs) with 2 training steps a cell and 4 test scans."""
    import yaml

    from medharness.trainers.sweeps import DEMO

    demo = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    for entry in demo["recipes"]:
        entry["overrides"] = [("trl.max_steps=2" if o.startswith("trl.max_steps=") else o)
                              for o in entry["overrides"]]
    demo["recipes"][1]["overrides"].append("trl.per_device_train_batch_size=8")  # one group of 8
    demo["eval"].update(limit=4, batch_size=4)
    path.write_text(yaml.safe_dump(demo, sort_keys=False), encoding="utf-8")
    return path


def sweep_processes(mark: str) -> list[int]:
    """The live medharness processes (guards, cell commands, stage workers, stages) of the driver whose
    environment carries `mark`."""
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if mark.encode() in environ and b"medharness" in cmdline and _alive(pid):
            found.append(pid)
    return found


def answers(out: Path) -> dict[str, list[str]]:
    """Every evaluation's generated texts, by its path in the sweep folder."""
    files = [f for d in ("reference", "cells") for f in (out / d).rglob("samples/*.jsonl")]
    return {str(f.relative_to(out)): [json.loads(row)["generation"]["text"]
                                      for row in f.read_text().splitlines()] for f in files}


def board_of(out: Path) -> tuple[str, Any]:
    record = json.loads((out / "sweep.json").read_text())
    return ((out / "leaderboard.md").read_text().replace(str(out), "SWEEP"),
            json.loads(json.dumps(record["board"]).replace(str(out), "SWEEP")))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_demo_on_ray_killed_and_resumed_ends_in_the_local_board(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo sweep (tiny settings) with the local executor, then with `--executor ray` (a driver process
    with its own local Ray instance of 2 CPUs) killed with SIGKILL once the SFT cell has finished, then run
    again with --resume: the cells ran as Ray tasks, GRPO trained after SFT had, nothing outlived the killed
    driver, the finished cells were not run again, and the board is the local executor's."""
    pytest.importorskip("ray")
    pytest.importorskip("trl")
    sft, grpo = "sft-phantom_presence-kall-s0", "grpo-from-sft-phantom_presence-kall-s0"
    file = tiny_demo(tmp_path / "demo.yaml")
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as Ray gives a task of 1 CPU: the same arithmetic
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(local)]) == 0

    mark = f"ray-driver-{tmp_path.name}"
    env = {**os.environ, "RAY_OVERRIDE_RESOURCES": json.dumps({"CPU": 2}), "MH_TEST_DRIVER": mark}
    argv = [*sweep_stages.PROGRAM, "train-then-eval", "--sweep", str(file), "--output", str(on_ray),
            "--executor", "ray"]
    with (tmp_path / "driver-1.log").open("w") as log:
        driver = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        tasks = on_ray / "ray" / "tasks.json"
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline and driver.poll() is None and not (
                tasks.is_file() and any(t["name"] == sft and t.get("ok")
                                        for t in json.loads(tasks.read_text()))):
            time.sleep(0.5)
        assert driver.poll() is None, (tmp_path / "driver-1.log").read_text()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    first = {t["name"]: t for t in json.loads(tasks.read_text())}
    assert first[sft]["ok"] and first[sft]["worker_pid"] != driver.pid and first[sft]["task_id"]
    assert not first[grpo].get("ok")  # mid-sweep: the GRPO cell had not finished
    # nothing of the sweep outlives its driver (the guards end each task's process group)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sweep_processes(mark):
        time.sleep(0.5)
    assert not sweep_processes(mark)
    grpo_train = on_ray / "cells" / grpo / "train" / "train.json"  # not finished by a stray process either
    assert not grpo_train.is_file() or json.loads(grpo_train.read_text())["status"] != "finished"
    finished = [on_ray / "cells" / sft / "train" / "train.json",
                *(on_ray / "cells" / sft / "eval").rglob("run.json")]
    stamps = {f: f.stat().st_mtime_ns for f in finished}

    done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    second = [t["name"] for t in json.loads(tasks.read_text())]
    assert sft not in second and grpo in second  # the finished cell was not started again
    assert {f: f.stat().st_mtime_ns for f in finished} == stamps
    assert board_of(on_ray) == board_of(local)
    assert answers(on_ray) == answers(local) and len(answers(local)) == 6  # each model's every answer, too
    # GRPO trained from SFT's final checkpoint, after SFT had finished; its task ran on a Ray worker
    sft_log = json.loads((on_ray / "cells" / sft / "train" / "train.json").read_text())
    grpo_log = json.loads((on_ray / "cells" / grpo / "train" / "train.json").read_text())
    grpo_started = min([grpo_log["started"], *(a["started"] for a in grpo_log.get("previous") or [])])
    assert grpo_started >= sft_log["finished"]
    assert "# " in (on_ray / "ray" / "logs" / f"{grpo}.log").read_text().splitlines()[0]
    assert grpo_log["model"] == str((on_ray / "cells" / sft / "train" / "final").resolve())
