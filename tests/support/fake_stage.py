"""A stand-in for `medharness.cli:main` in the stage worker's fault-injection tests (no heavy imports):
`main(argv)` does what argv[0] says, so a test can make a forked stage succeed, print, exit, raise or die.

    ok TEXT            print TEXT to stdout and to stderr (through logging), return 0
    exit CODE          sys.exit(CODE)
    raise              raise an uncaught RuntimeError
    kill               SIGKILL itself (as the OOM killer would)
    kill-worker        SIGKILL the stage worker, then sleep (the worker's death must end the stage too)
    argv               print sys.argv and the process ids, return 0
    anything else      `medharness.cli.main(argv)`, except that with FAKE_STAGE_KILL=SUBSTRING a stage with
                       an argument containing SUBSTRING is SIGKILLed once at its start (FAKE_STAGE_KILL_MARK
                       names the file that remembers it was)

Run as a script (`python fake_stage.py ARGS`) it is the subprocess form of the same stage.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    what, rest = argv[0], argv[1:]
    if what == "ok":
        print(f"out: {' '.join(rest)}")
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        logging.getLogger("fake_stage").warning("err: %s", " ".join(rest))
        return 0
    if what == "exit":
        sys.exit(int(rest[0]))
    if what == "raise":
        raise RuntimeError("the stage broke")
    if what == "kill":
        print("about to be killed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "kill-worker":
        print(f"child {os.getpid()}", flush=True)
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)
        return 0
    if what == "argv":
        print(f"argv {sys.argv!r} pid {os.getpid()} ppid {os.getppid()}")
        return 0
    kill, mark = os.environ.get("FAKE_STAGE_KILL"), os.environ.get("FAKE_STAGE_KILL_MARK")
    if kill and mark and any(kill in arg for arg in argv) and not Path(mark).exists():
        Path(mark).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    from medharness.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
