"""The folders that training runs and sweeps leave: their layout and their readers, in this one place.

    RUN/run.json, samples/TASK.jsonl          a `medharness run` (runlog.py)
    TRAIN/                                    a `medharness train --output` (TrainDir)
        train.json                            status running|finished|failed|interrupted, config, final path
        logs.jsonl, completions.jsonl         a row per logging step / per sampled completion (LogRow,
                                              CompletionRow)
        train_samples.json                    the ids (and content keys) it trained on
        checkpoint-<step>/, final/            TRL's checkpoints, the final model
        evals/step-<N>/                       with --eval-every: a run directory per scored checkpoint
    SWEEP/                                    a `medharness train-then-eval` (SweepDir)
        sweep.json, leaderboard.md            the resolved sweep, its cells, board and paper table
        models/tiny-SIZE/                     a `tiny[:SIZE]` base model, built once
        splits/TASK-kK-sS.json                k-shot training ids (`medharness split`)
        reference/NAME/TASK/                  the base model's and the baselines' runs
        cells/ID/train/                       a TRAIN folder
        cells/ID/merged/                      a LoRA parent's final merged into a full folder for its child
                                              cells
        cells/ID/eval/[checkpoint-N/]TASK/    runs of the final (and each checkpoint's) model
        cells/ID/logs/, logs/                 each stage's output

A name from a sweep file (cell id, task) becomes part of a path only through `paths.inside`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from medharness.core.datafiles import parse_json, read_text
from medharness.core.errors import DataError
from medharness.core.paths import inside
from medharness.core.records import CompletionRow, LogRow, RunLog, SweepLog, TrainLog
from medharness.runs.runlog import RunDir

TRAIN_FILE = "train.json"
TRAIN_SAMPLES_FILE = "train_samples.json"
LOGS_FILE = "logs.jsonl"
COMPLETIONS_FILE = "completions.jsonl"
SWEEP_FILE = "sweep.json"
EVALS_DIR = "evals"
# The folder names a training run gives models (a checkpoint is `checkpoint-<step>`).
MODEL_FOLDERS = ("final", "merged")


def read_run(run_dir: Path) -> RunLog | None:
    """A run directory's run log, None when there is none (or it cannot be read: a stage to run again)."""
    try:
        return RunDir.open(run_dir).log
    except (DataError, OSError):
        return None


def run_status(run_dir: Path) -> str | None:
    """The run log's status of a run directory (None: no run there yet)."""
    runlog = read_run(run_dir)
    return None if runlog is None else runlog.status


@dataclass(frozen=True)
class TrainState:
    status: str | None  # running | finished | failed | interrupted; None: never started
    final: Path | None


@dataclass(frozen=True)
class TrainDir:
    """A `medharness train --output` folder."""

    root: Path

    @property
    def log_file(self) -> Path:
        return self.root / TRAIN_FILE

    @property
    def final(self) -> Path:
        return self.root / "final"

    def eval_dir(self, step: int | str) -> Path:
        return self.root / EVALS_DIR / f"step-{step}"

    def log(self) -> TrainLog | None:
        """`train.json` as its record; None when there is none, DataError when it cannot be read."""
        if not self.log_file.is_file():
            return None
        try:
            return TrainLog.model_validate_json(self.log_file.read_bytes())
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise DataError(f"{self.log_file}: not a readable train.json "
                            f"({str(exc).splitlines()[0]})") from None

    def state(self) -> TrainState:
        """`train.json`'s status and final checkpoint (unreadable: failed)."""
        try:
            log = self.log()
        except DataError:
            return TrainState("failed", None)
        if log is None:
            return TrainState(None, None)
        return TrainState(log.status, Path(log.final) if log.final else None)

    def log_rows(self) -> list[LogRow]:
        """`logs.jsonl`'s rows ([] when absent); a torn last line (a killed run) is left out."""
        return _jsonl(self.root / LOGS_FILE, LogRow)

    def completion_rows(self) -> list[CompletionRow]:
        """`completions.jsonl`'s rows ([] when absent); a torn last line (a killed run) is left out."""
        return _jsonl(self.root / COMPLETIONS_FILE, CompletionRow)

    def checkpoints(self) -> list[Path]:
        """The `checkpoint-<step>` folders, by step."""
        found = [p for p in self.root.glob("checkpoint-*") if p.is_dir() and is_checkpoint(p.name)]
        return sorted(found, key=lambda p: int(p.name.rpartition("-")[2]))


R = TypeVar("R", bound=BaseModel)


def _jsonl(path: Path, record: type[R]) -> list[R]:
    """The records of a JSONL file written as training runs ([] when absent). The common reader and parser
    (nesting, huge integers: errors by file and line); a final line with no newline after it, torn by a kill,
    is left out; any other line that is not a record is an error naming it."""
    if not path.is_file():
        return []
    text = read_text(path, "training log")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(record.model_validate(parse_json(path, line, number)))
        except (DataError, ValidationError) as exc:
            if number == len(lines):  # torn
                continue
            why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise DataError(f"{path}:{number}: not a {record.__name__} record: {why}") from None
    return rows


def is_checkpoint(name: str) -> bool:
    return name.startswith("checkpoint-") and name.rpartition("-")[2].isdigit()


@dataclass(frozen=True)
class SweepDir:
    """A `medharness train-then-eval` output folder."""

    root: Path

    @property
    def log_file(self) -> Path:
        return self.root / SWEEP_FILE

    def log(self) -> SweepLog | None:
        """`sweep.json` as its record; None when there is none, DataError when it cannot be read."""
        if not self.log_file.is_file():
            return None
        try:
            return SweepLog.model_validate_json(self.log_file.read_bytes())
        except (OSError, ValueError) as exc:
            why = str(exc).splitlines()[0]
            raise DataError(f"{self.log_file}: not a readable sweep.json ({why})") from None

    @property
    def board_file(self) -> Path:
        return self.root / "leaderboard.md"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def model_dir(self, size: str) -> Path:
        return inside(self.root, "models", f"tiny-{size}")

    def split_file(self, task: str, shots: int, seed: int) -> Path:
        return inside(self.root, "splits", f"{task}-k{shots}-s{seed}.json")

    def reference_dir(self, name: str, task: str) -> Path:
        return inside(self.root, "reference", name, task)

    def reference_logs(self, name: str) -> Path:
        return inside(self.root, "reference", name, "logs")

    def cell_dir(self, cid: str) -> Path:
        return inside(self.root, "cells", cid)

    def train_dir(self, cid: str) -> TrainDir:
        return TrainDir(self.cell_dir(cid) / "train")

    def merged_dir(self, cid: str) -> Path:
        return self.cell_dir(cid) / "merged"

    def cell_logs(self, cid: str) -> Path:
        return self.cell_dir(cid) / "logs"

    def eval_dir(self, cid: str, task: str, checkpoint: str | None = None) -> Path:
        return inside(self.root, "cells", cid, "eval", *([checkpoint] if checkpoint else []), task)

    def cell_runs(self, cid: str) -> str:
        """A glob of the run directories of a cell's final model."""
        return str(self.cell_dir(cid) / "eval" / "*")


# The run directories a sweep or training folder holds, as globs in their layout's order.
RUN_GLOBS = {SWEEP_FILE: ("reference/*/*", "cells/*/eval/*", "cells/*/eval/checkpoint-*/*"),
             TRAIN_FILE: (f"{EVALS_DIR}/step-*",)}
