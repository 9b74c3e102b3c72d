"""`train-then-eval --executor ray`: a sweep's cells as Ray tasks, then the merge in this process.

    medharness train-then-eval --sweep FILE --output SWEEP --executor ray [--ray-address auto|HOST:PORT]

Each reference row and each cell not yet finished is one Ray task (the jobs `--executor slurm` would submit,
trainers/sweeps/slurm.py `plan`). A task runs the cell's own command, the one `--print-commands` prints
(`train-then-eval ... --cell ID --resume`, through this interpreter), as a subprocess, so a crash stays in
the cell and a task writes exactly the folders a local sweep writes. A cell that trains `from:` another is
given its parent's task result (an ObjectRef): Ray starts it once the parent has ended, and it runs nothing
when the parent failed. Ray runs as many tasks at once as the cluster's free GPUs and CPUs allow. When all
have ended this process merges (sweeps/cli.py `merge_executed`): every stage finished, it runs the plain
`train-then-eval ... --resume` code (`run_all`), which skips every stage and renders SWEEP/leaderboard.md and
SWEEP/sweep.json (the local executor's board); if a task failed, the board of what finished is written (as
a local sweep writes it with failed cells) and nothing is run here.

Resources: a task declares the GPUs `--executor slurm` gives its job (`slurm.cell_gpus`, `slurm.eval_gpus`:
the sweep's `launch:` processes, or the evaluation's tensor x data parallel GPUs where more; a baseline row
none) and one CPU per process (at least one). On a cluster without GPUs (a laptop, CI) no task declares
GPUs. A task that asks for more than the largest node holds is refused before anything starts.

Without `--ray-address` a local Ray instance is started for this sweep (the machine's CPUs and GPUs, no
dashboard, its files under Ray's temp folder in /tmp, a token for this instance only in the environment, so
nothing is written to ~/.ray) and stopped at the end; `auto` joins the running cluster (`ray start`).
Written inside SWEEP/ray/ only: each task's output (logs/NAME.log) and tasks.json (per task: the command,
GPUs, CPUs, the parents it waited for, Ray's task id, node, worker pid, start, end, exit code).

Killed driver: a task's command runs under a guard (this module as a program, `guard`) that Linux signals
when its parent, the Ray worker, dies (`PR_SET_PDEATHSIG`), and that then kills the cell command's whole
process group (its stage worker, the stage, a training's launcher): a task does not outlive its worker,
whichever way the worker ends (the driver killed, the instance gone, `ray.cancel`). Run the same command
again (`--resume`): finished cells are neither started nor rerun.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medharness.trainers.sweeps.worker import PR_SET_PDEATHSIG  # (the stage worker's module: stdlib only)

if TYPE_CHECKING:  # the sweep modules load when the executor runs (the guard below imports nothing heavy)
    from medharness.trainers.sweeps.schema import Cell
    from medharness.trainers.sweeps.slurm import Job
    from medharness.trainers.sweeps.stages import Stages

RAY_DIR = "ray"
MODULE = "medharness.trainers.sweeps.ray_executor"  # the guard's program (`__name__` is __main__ there)


def import_ray() -> Any:
    """The `ray` module, or a ConfigError naming the extra (the run path's own rule)."""
    from medharness.backends.ray_replicas import import_ray

    return import_ray()


# -- the task (runs in a Ray worker) ------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def run_task(spec: dict[str, Any], *parents: dict[str, Any]) -> dict[str, Any]:
    """One cell's command under the guard, writing its output to spec["log"]; what happened, as a dict. A
    parent that did not finish (`ok` false) means the command is not run."""
    failed = [p["name"] for p in parents if not p.get("ok")]
    if failed:
        return {"name": spec["name"], "ok": False, "skipped": failed[0]}
    import ray

    context = ray.get_runtime_context()
    log = Path(spec["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    started, clock = _now(), time.monotonic()
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"# {started} task {context.get_task_id()} on {socket.gethostname()}\n"
                 f"$ {shlex.join(spec['argv'])}\n")
        fh.flush()
        guard = [spec["python"], "-m", MODULE, str(os.getpid()), "2", *spec["argv"]]
        proc = subprocess.Popen(guard, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=spec["cwd"], start_new_session=True)
        try:
            code = proc.wait()
        except BaseException:  # cancelled (KeyboardInterrupt in the task): the cell command goes with it
            _kill_group(proc.pid)
            proc.wait()
            raise
    return {"name": spec["name"], "ok": code == 0, "returncode": code, "task_id": context.get_task_id(),
            "node_id": context.get_node_id(), "host": socket.gethostname(), "worker_pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "started": started,
            "ended": _now(), "seconds": round(time.monotonic() - clock, 1)}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def guard(parent: int, levels: int, argv: list[str]) -> int:
    """Run `argv` in this process's group (a new session, which the task made) and end the whole group when
    the parent dies: Linux sends SIGTERM then (`PR_SET_PDEATHSIG`). Two levels: a Ray worker that ends kills
    its own children (the outer guard) with SIGKILL, which no handler sees; the inner guard, the outer one's
    child, then gets its SIGTERM and ends the group."""
    signal.signal(signal.SIGTERM, lambda signum, frame: _kill_group(0))
    signal.signal(signal.SIGHUP, lambda signum, frame: _kill_group(0))
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except AttributeError:  # not Linux: no parent-death signal, the group ends when the command does
        pass
    if os.getppid() != parent:  # the parent died before the signal was set
        return 1
    if levels > 1:
        argv = [sys.executable, "-m", MODULE, str(os.getpid()), str(levels - 1), *argv]
    code = subprocess.call(argv)
    return code if code >= 0 else 128 - code


# -- the driver ---------------------------------------------------------------------------------------------

def start(address: str | None) -> tuple[Any, bool]:
    """Ray, initialised: an instance this process already has, the cluster at `address` (`auto`: the one
    `ray start` started here), or a new local one (True: this process started Ray and shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():  # a notebook or a test that started Ray itself
        return ray, False
    import logging

    from medharness.backends.ray_replicas import instance_token

    local = address in (None, "local")
    if local:
        instance_token()
    options: dict[str, Any] = {"address": "local" if local else address, "logging_level": logging.WARNING,
                               "log_to_driver": False}  # each task's output goes to its log file
    if local:  # tasks pass small dicts only
        options.update(include_dashboard=False, object_store_memory=128 * 1024**2)
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = notice.level
    notice.setLevel(logging.ERROR)  # not "token authentication is enabled" on every run
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:  # no cluster there, a refused token, ...
        from medharness.core.errors import ConfigError

        where = "a local Ray instance" if local else f"the Ray cluster at {address}"
        raise ConfigError(f"--executor ray: cannot start or join {where}: {exc}") from None
    finally:
        notice.setLevel(level)
    return ray, True


def resources(ray: Any, jobs: list[Job]) -> dict[str, tuple[int, int]]:
    """{job: (GPUs, CPUs)} to declare: the job's GPUs (none on a cluster without any), a CPU per process.
    A ConfigError when a job needs more than the largest node has."""
    from medharness.core.errors import ConfigError

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    most_gpus = max((int(r.get("GPU", 0)) for r in nodes), default=0)
    most_cpus = max((int(r.get("CPU", 0)) for r in nodes), default=0)
    out = {job.name: (job.gpus if most_gpus else 0, max(1, job.gpus)) for job in jobs}
    too_big = [f"{name} ({gpus} GPU(s), {cpus} CPU(s))" for name, (gpus, cpus) in out.items()
               if gpus > most_gpus or cpus > most_cpus]
    if too_big:
        raise ConfigError(f"nothing started: the largest node of the Ray cluster has {most_gpus} GPU(s) and "
                          f"{most_cpus} CPU(s); {', '.join(too_big)} would wait for ever (see the GPU rule "
                          "in docs/scaling.md)")
    return out


def run_on_ray(args: argparse.Namespace, stages: Stages, cells: list[Cell], references: dict[str, str | None],
               merge: Callable[[dict[str, str], int], int]) -> int:
    """The `--executor ray` branch of `train-then-eval`: the tasks, then `merge(failed, tasks started)`
    (sweeps/cli.py: the local `--resume`, or the board of what finished)."""
    from medharness.core.errors import ConfigError

    if args.executor != "ray":
        raise ConfigError("--ray-address needs --executor ray")
    if args.slurm_option:
        raise ConfigError("--slurm-option needs --executor slurm")
    from medharness.runs.runlog import RunLock
    from medharness.trainers.sweeps.slurm import MERGE, check_whole_sweep, plan

    check_whole_sweep(args, stages, cells)
    import_ray()  # a missing extra stops here, before anything is written
    jobs = [job for job in plan(stages.file, stages, cells, references, stages.sweep.data_dir if args.data_dir
                                else None) if job.name != MERGE]
    stages.root.mkdir(parents=True, exist_ok=True)
    lock = RunLock.acquire(stages.root, "train-then-eval")  # one whole-sweep driver per folder
    try:
        failed = run_tasks(args.ray_address, jobs, stages) if jobs else {}
        return merge(failed, len(jobs))
    finally:
        stages.close()
        lock.release()


def run_tasks(address: str | None, jobs: list[Job], stages: Stages) -> dict[str, str]:
    """Start every job as a Ray task (parents first) and wait for all; {job: why it failed} of those that
    did not finish. SWEEP/ray/tasks.json records each task as it ends."""
    from medharness.core.atomic import write_json_atomic
    from medharness.core.paths import inside
    from medharness.trainers.sweeps.stages import PROGRAM

    ray, own = start(address)
    folder = inside(stages.root, RAY_DIR)
    inside(folder, "logs").mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", stages.sweep.name or stages.file.stem)
    refs: dict[str, Any] = {}
    records: dict[str, dict[str, Any]] = {}
    try:
        declared = resources(ray, jobs)
        if not any(gpus for gpus, _ in declared.values()) and any(job.gpus for job in jobs):
            print("note: the Ray cluster has no GPUs: no task declares any (each runs on CPU)", flush=True)
        task = ray.remote(run_task)
        for job in jobs:
            gpus, cpus = declared[job.name]
            spec = {"name": job.name, "argv": [*PROGRAM, *job.args], "python": sys.executable,
                    "cwd": str(Path.cwd()), "log": str(inside(folder, "logs", f"{job.name}.log"))}
            refs[job.name] = task.options(num_gpus=gpus, num_cpus=cpus, max_retries=0,
                                          name=f"mh-{name}-{job.name}").remote(
                spec, *(refs[parent] for parent in job.after))
            records[job.name] = {"name": job.name, "command": shlex.join(spec["argv"]), "gpus": gpus,
                                 "cpus": cpus, "after": job.after, "log": spec["log"]}
            print(f"submitted {job.name}: Ray task" + (f" after {', '.join(job.after)}" if job.after else "")
                  + (f", {gpus} GPU(s)" if gpus else ""), flush=True)
        write_json_atomic(inside(folder, "tasks.json"), list(records.values()))
        failed = wait_all(ray, refs, records, lambda: write_json_atomic(inside(folder, "tasks.json"),
                                                                        list(records.values())))
    except BaseException:  # Ctrl-C: the tasks (and their commands, see `guard`) end with the driver
        for ref in refs.values():
            ray.cancel(ref, force=True)
        raise
    finally:
        if own:
            ray.shutdown()
    return failed


def wait_all(ray: Any, refs: dict[str, Any], records: dict[str, dict[str, Any]],
             save: Callable[[], None]) -> dict[str, str]:
    """Wait for every task, saying each as it ends; {job: why} for those that failed or did not run."""
    waiting = {ref: job for job, ref in refs.items()}
    failed: dict[str, str] = {}
    while waiting:
        [ready], _ = ray.wait(list(waiting), num_returns=1)
        job = waiting.pop(ready)
        try:
            result = ray.get(ready)
        except ray.exceptions.RayError as exc:  # the worker died, the task was cancelled
            result = {"ok": False, "error": str(exc).strip().splitlines()[-1][:500]}
        records[job].update(result)
        parent = result.get("skipped") or next((p for p in records[job]["after"] if p in failed), None)
        if parent is not None:  # (a crashed parent's error reaches its children through Ray)
            failed[job] = f"not run: its parent {parent} failed"
        elif "error" in result:
            failed[job] = f"the Ray task failed: {result['error']}"
        elif not result["ok"]:
            failed[job] = f"exited with {result['returncode']}; see {records[job]['log']}"
        if job in failed:
            print(f"{job}: {failed[job]}", file=sys.stderr, flush=True)
        else:
            print(f"{job}: finished ({result['seconds']} s, {result['host']})", flush=True)
        save()
    return failed


if __name__ == "__main__":  # the guard: python -m medharness.trainers.sweeps.ray_executor PARENT LEVELS ARGV
    sys.exit(guard(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
