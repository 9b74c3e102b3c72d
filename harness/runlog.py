"""The run directory: `run.json` (config, versions, status, summaries) + `samples/<task>.jsonl` (+ the judges'
`judgements/<task>.jsonl`, written the same way).

Rows are appended and fsync'ed per batch, so a run killed at any point (even `kill -9`) loses at
most the batch in flight; `--resume` drops a torn last line and continues with the missing ids.
`run.json` is replaced atomically (write to a temporary file, then rename).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from medharness.errors import ConfigError, DataError
from medharness.records import (
    RUNLOG_SCHEMA,
    JudgeEntry,
    Judgement,
    ResultRow,
    RunLog,
    RunStatus,
    RunUsage,
    TaskEntry,
    TaskJudges,
    TrainedFrom,
)

RUN_FILE = "run.json"
R = TypeVar("R", ResultRow, Judgement)
log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("medharness", "torch", "transformers", "vllm", "datasets", "pydantic", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, allow_nan=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def json_safe(data: Any) -> Any:
    """NaN/inf -> None, so run.json stays strict JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


_warned_old: set[Path] = set()


def _load_log(file: Path) -> RunLog:
    """Read run.json into a RunLog; a run.json of the previous (untyped, pre-0.2) shape loads too, said once."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "run_id" not in data:
        raise DataError(f"{file}: not a medharness run log (no run_id)")
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or version > RUNLOG_SCHEMA:
        raise DataError(f"{file}: run log schema {version!r} is newer than this medharness reads "
                        f"({RUNLOG_SCHEMA}); upgrade medharness")
    if version == 0:
        if file not in _warned_old:
            _warned_old.add(file)
            log.warning("%s: a run log of the previous shape (no schema_version); read as schema %d, "
                        "metric arguments unknown", file, RUNLOG_SCHEMA)
        data = {**data, "schema_version": RUNLOG_SCHEMA}
    try:
        return RunLog.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise DataError(f"{file}: not a valid run log at {where or 'top level'}: {err['msg']}") from None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunDir:
    """One run's folder. Create it with `RunDir.create` or reopen it with `RunDir.open`; `log` is its run log,
    changed only through the methods below (each saves run.json atomically)."""

    def __init__(self, path: Path, runlog: RunLog) -> None:
        self.path = path
        self.log = runlog

    @classmethod
    def create(cls, path: Path, config: dict[str, Any], seed: int | None = None,
               label: str | None = None) -> RunDir:
        if path.exists() and any(path.iterdir()):
            raise ConfigError(f"run directory {path} already exists: pass --resume to continue it, "
                              "or choose another --output")
        (path / "samples").mkdir(parents=True, exist_ok=True)
        run = cls(path, RunLog(run_id=path.name, label=label, created=now(), command=list(sys.argv),
                               config=config, versions=versions(), seed=seed))
        run.save()
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        file = path / RUN_FILE
        if not file.is_file():
            raise DataError(f"{path} is not a run directory (no {RUN_FILE})")
        return cls(path, _load_log(file))

    def save(self) -> None:
        self.log = self.log.model_copy(update={"updated": now()})
        write_json_atomic(self.path / RUN_FILE, json_safe(self.log.model_dump(mode="json")))

    def _update(self, **fields: Any) -> None:
        self.log = self.log.model_copy(update=fields)
        self.save()

    def set_status(self, status: RunStatus, error: str | None = None) -> None:
        self._update(status=status, error=error or None)

    def set_model(self, fingerprint: str, attn_implementation: str | None = None,
                  trained_from: TrainedFrom | None = None) -> None:
        self._update(model=fingerprint, attn_implementation=attn_implementation, trained_from=trained_from)

    def set_task(self, name: str, entry: TaskEntry) -> None:
        self._update(tasks={**self.log.tasks, name: entry})

    def update_task(self, name: str, **fields: Any) -> None:
        """Change some fields of a task entry (its summary, tokens, cost, judge columns)."""
        entry = self.log.tasks.get(name)
        if entry is None:
            raise DataError(f"{self.path}: the run log has no task {name!r}")
        self.set_task(name, entry.model_copy(update=fields))

    def set_usage(self, usage: RunUsage) -> None:
        self._update(usage=usage)

    def set_judges(self, members: dict[str, JudgeEntry], columns: dict[str, TaskJudges]) -> None:
        """Record panel members (merged by name) and each judged task's judge columns."""
        tasks = dict(self.log.tasks)
        for name, judged in columns.items():
            if name in tasks:
                tasks[name] = tasks[name].model_copy(update={"judges": judged})
        self._update(judges={**self.log.judges, **members}, tasks=tasks)

    def discard(self) -> None:
        """Remove a run directory that never got a single result (bad input before any work)."""
        if not any(self.samples_dir.glob("*.jsonl")):
            shutil.rmtree(self.path, ignore_errors=True)

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    def task_file(self, task: str) -> Path:
        return self.samples_dir / f"{task}.jsonl"

    def append(self, task: str, rows: Iterable[ResultRow]) -> None:
        """Append rows and force them to disk: a batch is either fully there or resumable."""
        _append_lines(self.task_file(task), (row.model_dump_json() for row in rows))

    def repair(self, task: str) -> int:
        """Cut a torn last line left by a kill mid-write; return the number of bytes dropped."""
        return _repair(self.task_file(task))

    def drop_rows(self, task: str, drop: Callable[[ResultRow], bool]) -> int:
        """Rewrite a samples file without the rows `drop` selects (atomically: a kill leaves the old file or
        the new one); return how many were dropped."""
        rows = self.rows(task)
        keep = [r for r in rows if not drop(r)]
        if len(keep) < len(rows):
            tmp = self.task_file(task).with_suffix(".jsonl.tmp")
            tmp.unlink(missing_ok=True)
            _append_lines(tmp, (r.model_dump_json() for r in keep))
            os.replace(tmp, self.task_file(task))
        return len(rows) - len(keep)

    def judgement_file(self, task: str) -> Path:
        return self.path / "judgements" / f"{task}.jsonl"

    def append_judgements(self, task: str, items: Iterable[Judgement]) -> None:
        file = self.judgement_file(task)
        file.parent.mkdir(exist_ok=True)
        _repair(file)
        _append_lines(file, (j.model_dump_json() for j in items))

    def judgements(self, task: str) -> list[Judgement]:
        """Every judgement of a task, in the order written (a re-judged sample appears again, later)."""
        return list(read_jsonl(self.judgement_file(task), Judgement))

    def rows(self, task: str) -> list[ResultRow]:
        return list(read_rows(self.task_file(task)))

    def tasks(self) -> list[str]:
        return sorted(p.stem for p in self.samples_dir.glob("*.jsonl"))


def _append_lines(file: Path, lines: Iterable[str]) -> None:
    blob = "".join(line + "\n" for line in lines)
    with file.open("a", encoding="utf-8") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())


def _repair(file: Path) -> int:
    if not file.exists():
        return 0
    data = file.read_bytes()
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    if tail:
        with file.open("r+b") as fh:
            fh.truncate(keep)
    return len(tail)


def read_jsonl(file: Path, record: type[R]) -> Iterator[R]:
    """Records of one JSONL file; a torn final line (a killed run) is skipped, anything else is an error."""
    if not file.exists():
        return
    with file.open(encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield record.model_validate_json(line)
        except ValidationError as exc:
            if number == len(lines):  # no newline after it: torn by a kill
                continue
            raise DataError(f"{file}:{number}: not a {record.__name__} record: {exc.errors()[0]['msg']}") from None


def read_rows(file: Path) -> Iterator[ResultRow]:
    """Rows of one samples file (see `read_jsonl`); a sample id that appears twice is an error."""
    seen: set[str] = set()
    for row in read_jsonl(file, ResultRow):
        if row.sample.id in seen:
            raise DataError(f"{file}: sample '{row.sample.id}' appears twice")
        seen.add(row.sample.id)
        yield row
