"""The stage worker: each stage a forked child of one long-lived process. A stage that exits, raises or is
killed ends only itself (its exit code read back as a subprocess's), the worker's own death ends the stage
with it, and where forking is unusable (simulated: CUDA initialised) the stages run as subprocesses. The
stage here is tests/support/fake_stage.py, so nothing heavy is imported."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medharness.core.errors import ConfigError
from medharness.trainers.sweeps import DEMO
from medharness.trainers.sweeps import stages as sweep_exec
from medharness.trainers.sweeps.schema import load_sweep
from medharness.trainers.sweeps.stages import Command, StageFailed, Stages
from medharness.trainers.sweeps.worker import StageWorker

SUPPORT = Path(__file__).resolve().parents[2] / "support"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="stages are forked on Linux only")


@pytest.fixture()
def support_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker is a fresh interpreter: it finds tests/support through PYTHONPATH."""
    paths = [str(SUPPORT), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


@pytest.fixture()
def worker(tmp_path: Path, support_path: None) -> Iterator[StageWorker]:
    w = StageWorker("fake_stage:main", [], tmp_path / "worker.log")
    yield w
    w.close()


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its new parent counts as ended)."""
    for _ in range(100):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_a_stage_s_crash_stays_in_its_child(worker: StageWorker, tmp_path: Path) -> None:
    def log(name: str) -> Path:
        return tmp_path / f"{name}.log"

    assert worker.run(["ok", "hello"], log("ok")) == 0
    assert worker.proc is not None
    pid = worker.proc.pid
    assert log("ok").read_text() == "out: hello\nWARNING err: hello\n"  # stdout and logging, in the log
    assert worker.run(["exit", "3"], log("exit")) == 3
    assert worker.run(["raise"], log("raise")) == 1
    assert log("raise").read_text().startswith("Traceback")
    assert log("raise").read_text().endswith("RuntimeError: the stage broke\n")
    assert worker.run(["kill"], log("kill")) == -signal.SIGKILL
    assert log("kill").read_text() == "about to be killed\n"
    # the worker survived each of them and forked the next stage, which starts as fresh as the first
    assert worker.run(["ok", "again"], log("again")) == 0
    assert log("again").read_text() == "out: again\nWARNING err: again\n"
    assert worker.run(["argv"], log("argv")) == 0
    found = re.fullmatch(r"argv \[(.*)\] pid (\d+) ppid (\d+)\n", log("argv").read_text())
    assert found is not None
    assert found[1] == f"'{SUPPORT / 'fake_stage.py'}', 'argv'"  # as `python -m fake_stage argv` has it
    assert int(found[3]) == pid == worker.proc.pid and int(found[2]) != pid


def test_the_worker_s_death_ends_its_stage_and_a_new_worker_takes_the_next(worker: StageWorker,
                                                                          tmp_path: Path) -> None:
    assert worker.run(["ok"], tmp_path / "first.log") == 0
    assert worker.proc is not None
    first = worker.proc.pid
    assert worker.run(["kill-worker"], tmp_path / "dies.log") == -signal.SIGKILL
    child = int((tmp_path / "dies.log").read_text().split()[1])
    assert gone(child)  # killed with its worker, not left running on its own
    assert worker.run(["ok", "next"], tmp_path / "next.log") == 0
    assert worker.proc is not None and worker.proc.pid != first
    assert (tmp_path / "next.log").read_text().startswith("out: next\n")


def test_a_worker_that_cannot_fork_or_start_hands_the_stages_back(tmp_path: Path, support_path: None) -> None:
    said: list[str] = []
    nofork = StageWorker("fake_stage:main", ["fake_stage_nofork"], tmp_path / "w1.log", say=said.append)
    assert nofork.run(["ok"], tmp_path / "a.log") is None and not (tmp_path / "a.log").exists()
    assert said == [("  the stage worker cannot fork stages: simulated: CUDA is initialised; each stage runs "
                     "as a subprocess")]
    broken = StageWorker("no_such_module:main", [], tmp_path / "w2.log", say=said.append)
    assert broken.run(["ok"], tmp_path / "b.log") is None
    assert "it stopped (exit 1" in said[1]
    assert "No module named 'no_such_module'" in (tmp_path / "w2.log").read_text()


# -- through the sweep's stages -----------------------------------------------------------------------------

@pytest.fixture()
def fake_stages(tmp_path: Path, support_path: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stages]:
    """Stages whose commands run fake_stage: forked (ENTRY) or as a subprocess (PROGRAM)."""
    monkeypatch.setattr(sweep_exec, "ENTRY", "fake_stage:main")
    monkeypatch.setattr(sweep_exec, "PRELOAD", ())
    monkeypatch.setattr(sweep_exec, "PROGRAM", [sys.executable, str(SUPPORT / "fake_stage.py")])
    root = tmp_path / "sweep"
    root.mkdir()
    said: list[str] = []
    stages = Stages(load_sweep(DEMO), DEMO, root, resume=False, say=said.append)
    stages.said = said  # type: ignore[attr-defined]
    yield stages
    stages.close()


def test_a_forked_stage_that_dies_is_a_failed_stage_and_the_next_runs(fake_stages: Stages,
                                                                      tmp_path: Path) -> None:
    log = tmp_path / "stage.log"
    with pytest.raises(StageFailed, match=r"exited with -9; see .*stage.log:\n  \$ .*fake_stage.py kill\n"
                                          r"  about to be killed"):
        fake_stages._call(Command(["kill"]), log)
    fake_stages._call(Command(["argv"]), log)
    assert fake_stages.worker is not None and fake_stages.worker.proc is not None
    ppid = int(log.read_text().split()[-1])
    assert ppid == fake_stages.worker.proc.pid  # forked by the worker, not a subprocess of this process
    assert log.read_text().count(f"$ {sys.executable} {SUPPORT / 'fake_stage.py'} ") == 2  # the argv


def test_stages_run_as_subprocesses_on_request_or_where_forking_is_unusable(
        fake_stages: Stages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sweep_exec.STAGES_ENV, "subprocess")
    plain = Stages(fake_stages.sweep, DEMO, fake_stages.root, resume=False)
    assert plain.worker is None
    with pytest.raises(StageFailed, match="exited with 4"):
        plain._call(Command(["exit", "4"]), tmp_path / "a.log")
    plain._call(Command(["argv"]), tmp_path / "b.log")
    assert int((tmp_path / "b.log").read_text().split()[-1]) == os.getpid()
    monkeypatch.setenv(sweep_exec.STAGES_ENV, "threads")
    with pytest.raises(ConfigError, match="MEDHARNESS_SWEEP_STAGES='threads': use fork or subprocess"):
        Stages(fake_stages.sweep, DEMO, fake_stages.root, resume=False)

    monkeypatch.delenv(sweep_exec.STAGES_ENV)
    monkeypatch.setattr(sweep_exec, "PRELOAD", ("fake_stage_nofork",))
    fallback = Stages(fake_stages.sweep, DEMO, fake_stages.root, resume=False)
    fallback._call(Command(["argv"]), tmp_path / "c.log")
    fallback._call(Command(["argv"]), tmp_path / "d.log")
    for name in ("c", "d"):  # every stage a subprocess of this process; the worker was tried once
        assert int((tmp_path / f"{name}.log").read_text().split()[-1]) == os.getpid()
    assert (fake_stages.root / "logs" / "stage-worker.log").is_file()
    fallback.close()
