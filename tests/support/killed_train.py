"""`medharness train ARGS` (the real command, run as `python killed_train.py ARGS`) that kills itself with
SIGKILL right after a given checkpoint is complete, as a `kill -9` at that moment would: no handler runs,
train.json stays `running`, final/ is never written. The kill tests of tests/trainers/test_resume.py and
tests/trainers/sweeps/test_resume_cells.py.

KILL_AFTER_STEP=N: die once `checkpoint-N/` and its manifest are written; KILL_MARKS=DIR: one mark per
--output in DIR, so each output dies once and its `--resume` runs on. Unset: an ordinary, uninterrupted run.
The test length reward (train_rewards.LENGTH) is registered as tests/trainers/conftest.py does in-process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from train_rewards import LENGTH

from medharness.core.torchvision_shim import ensure_torchvision_importable
from medharness.scoring.metrics import METRICS, Metric
from medharness.trainers import prepare


def kill_callback(step: int, mark: Path) -> Any:
    ensure_torchvision_importable()  # before transformers pulls torchvision in
    from transformers import TrainerCallback

    class KillAfterSave(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # added after medharness's own callbacks: the checkpoint and its manifest are on disk
            if state.global_step == step and not mark.exists():
                mark.write_text(str(os.getpid()), encoding="utf-8")
                os.kill(os.getpid(), signal.SIGKILL)

    return KillAfterSave()


def main() -> int:
    METRICS.register(LENGTH, Metric(name=LENGTH, fn=lambda answer, sample, text: len(text) / 10.0,
                                    percent=False))
    argv = sys.argv[1:]
    if "KILL_AFTER_STEP" in os.environ:
        output = str(Path(argv[argv.index("--output") + 1]).resolve())
        mark = Path(os.environ["KILL_MARKS"]) / hashlib.sha256(output.encode()).hexdigest()[:16]
        kill = kill_callback(int(os.environ["KILL_AFTER_STEP"]), mark)
        original = prepare.Prepared.add_callbacks

        def add_callbacks(self: prepare.Prepared, output: Path, progress: Any) -> None:
            original(self, output, progress)
            self.ctx.callbacks.append(kill)

        prepare.Prepared.add_callbacks = add_callbacks  # type: ignore[method-assign]
    from medharness.cli import main as cli_main

    return cli_main(["train", *argv])


if __name__ == "__main__":
    sys.exit(main())
