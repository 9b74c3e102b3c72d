"""The stage worker: one process per sweep that imports the heavy libraries once and forks a child per stage.

    python -m medharness.trainers.sweeps.worker ENTRY [MODULE ...]

The sweep starts it (`StageWorker`) at its first stage. It imports each MODULE (an ImportError is passed
over: a light install imports less), never initialises CUDA and runs no torch operation, so every fork
starts from a clean, single-purpose process. Each stage is then `ENTRY(args)` ("module:function", the
CLI's `main`) in a forked child: its stdout and stderr go to the stage's log file, `sys.argv` is what the
subprocess would have had, and it ends with `os._exit` after the exit handlers have run and the logs are
flushed (no interpreter teardown). A crash, `sys.exit`, an exception or a kill (the OOM killer) ends the
child only; its exit code is read back as a subprocess's return code (negative: killed by that signal).

Not forked from the sweep process itself: a process that has run torch operations (a test session, a
notebook) leaves OpenMP's thread pool behind, and a child forked from it hangs at its first parallel region.

Protocol: after the imports the worker writes one line {"fork": null | "why forking is unusable"}; then,
per stage, it reads {"args": [...], "log": PATH} from stdin and writes {"code": N}. At EOF it exits.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

PR_SET_PDEATHSIG = 1  # prctl(2): the child is killed when the worker dies


def fork_problem() -> str | None:
    """Why a forked child could not use the GPU (None: forking is fine): CUDA initialised in this process,
    or torch marked fork-unsafe by an import that counted the devices."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "cuda"):
        return None
    if torch.cuda.is_initialized():
        return "CUDA is initialised in the stage worker"
    pid = os.fork()
    if pid == 0:  # a probe: does torch refuse CUDA in a forked child?
        os._exit(1 if torch.cuda._is_in_bad_fork() else 0)
    _, status = os.waitpid(pid, 0)
    return "torch refuses CUDA in a forked child" if os.waitstatus_to_exitcode(status) else None


def _exit_code(exc: SystemExit) -> int:
    """As the interpreter maps `sys.exit(x)`."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _child(entry: Callable[[list[str]], int], program: str, args: list[str], log_file: str) -> None:
    """The forked stage: never returns."""
    code = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the worker ignores Ctrl-C, a stage not
        out = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(null)
        sys.argv = [program, *args]  # run.json records the command as a subprocess's sys.argv
        code = entry(args)
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # noqa: BLE001 - reported as an uncaught exception would be
        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code & 0xFF)


def serve(entry_name: str, modules: Sequence[str]) -> None:
    """The worker's loop (stdin: requests, stdout: replies; what the imports print goes to stderr)."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the stage and the sweep (one process group)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            print(f"stage worker: {name} not imported ({exc})", file=sys.stderr)
    module_name, _, attr = entry_name.partition(":")
    module = importlib.import_module(module_name)
    entry, program = getattr(module, attr), str(module.__file__)
    gc.collect()
    gc.freeze()  # the imported objects stay untouched by the children's collections (copy-on-write)
    _reply(replies, {"fork": fork_problem()})
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            _child(entry, program, list(request["args"]), request["log"])
        _, status = os.waitpid(pid, 0)
        _reply(replies, {"code": os.waitstatus_to_exitcode(status)})
    os._exit(0)


def _reply(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


class StageWorker:
    """The sweep's side: starts the worker on the first stage, hands it stages, stops it on `close`.
    `run` returns None where stages cannot be forked here (the caller runs a subprocess instead)."""

    def __init__(self, entry: str, modules: Sequence[str], log_file: Path,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.entry, self.modules, self.log_file, self.say = entry, list(modules), log_file, say
        self.proc: subprocess.Popen[str] | None = None
        self.unusable: str | None = None

    def _start(self) -> subprocess.Popen[str] | None:
        if self.unusable is not None:
            return None
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a", encoding="utf-8") as err:
            proc = subprocess.Popen([sys.executable, "-m", __name__, self.entry, *self.modules],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                    encoding="utf-8")
        ready = self._read(proc)
        if ready is None or ready.get("fork"):
            why = (ready or {}).get("fork") or f"it stopped (exit {proc.wait()}; see {self.log_file})"
            self._stop(proc)
            self.unusable = f"the stage worker cannot fork stages: {why}"
            self.say(f"  {self.unusable}; each stage runs as a subprocess")
            return None
        self.proc = proc
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen[str]) -> dict[str, Any] | None:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        return json.loads(line) if line else None

    def run(self, args: Sequence[str], log_file: Path) -> int | None:
        """Run `ENTRY(args)` in a forked child writing to `log_file`; its exit code, as a subprocess's."""
        proc = self._start()
        if proc is None:
            return None
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps({"args": list(args), "log": str(log_file)}) + "\n")
            proc.stdin.flush()
            reply = self._read(proc)
        except BrokenPipeError:
            reply = None
        except BaseException:  # Ctrl-C: as subprocess.run, the stage does not outlive the sweep
            self._stop(proc, kill=True)
            raise
        if reply is None:  # the worker died (and took the stage with it)
            code = proc.wait()
            self.proc = None
            return code or 1
        return int(reply["code"])

    def _stop(self, proc: subprocess.Popen[str], kill: bool = False) -> None:
        if kill:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        proc.wait()

    def close(self) -> None:
        if self.proc is not None:
            self._stop(self.proc)
            self.proc = None


if __name__ == "__main__":  # through the imported module, whose functions a preloaded module may replace
    from medharness.trainers.sweeps import worker

    worker.serve(sys.argv[1], sys.argv[2:])
