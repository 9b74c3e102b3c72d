"""The run directory: `run.json` (config, versions, status, summaries) + `samples/<task>.jsonl` (+ the judges'
`judgements/<task>.jsonl`, written the same way).

Rows are appended and fsync'ed per batch, so a run killed at any point (even `kill -9`) loses at
most the batch in flight; `--resume` drops a torn last line and continues with the missing ids.
`run.json` is replaced atomically (write to a temporary file, then rename).

One process writes a run at a time: `RunDir.create` and `RunDir.open(path, writer=...)` take an exclusive
advisory lock (`flock`) on `run.lock` inside the directory, held until `close()` or the process ends (the
kernel drops it with the process, so a lock left by a killed run is never stale). A second writer is refused
with a `RunInUseError` naming the holder (pid, host, start time, command), which the lock file records.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from medharness.core.atomic import is_temporary_of, temporary_file, write_json_atomic
from medharness.core.datafiles import parse_json, read_text
from medharness.core.errors import ConfigError, DataError, RunInUseError
from medharness.core.records import (
    RUNLOG_SCHEMA,
    ImportSettings,
    JudgeEntry,
    Judgement,
    ResultRow,
    RowToScore,
    RunLog,
    RunSettings,
    RunStatus,
    RunUsage,
    TaskEntry,
    TaskJudges,
    TrainedFrom,
    check_safe_name,
)
from medharness.core.secrets import scrub, scrub_value
from medharness.core.versions import package_versions

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
# run.json's `versions`: these and the Python version
PACKAGES = ("medharness", "torch", "transformers", "vllm", "datasets", "pydantic", "numpy")
R = TypeVar("R", ResultRow, Judgement)
T = TypeVar("T")
log = logging.getLogger(__name__)


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
    """Read run.json into a RunLog; a run.json of the previous (untyped, pre-0.2) shape loads too, said
    once."""
    data = parse_json(file, read_text(file, "run log"))  # deep nesting, huge integers, lone surrogates
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


class RunLock:
    """An exclusive advisory lock on a run directory: `flock` on its `run.lock`, which records the holder."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path, purpose: str) -> RunLock:
        """Lock `directory` (it must exist) for `purpose` (e.g. "run", "judge"), or raise RunInUseError."""
        import fcntl

        file = directory / LOCK_FILE
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = describe_holder(file)
            os.close(fd)
            raise RunInUseError(f"run directory {directory} is in use by another medharness process "
                                f"({holder}); wait for it to end, or choose another --output") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "purpose": purpose,
                "command": [scrub(arg) for arg in sys.argv]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return cls(directory, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Clear the holder record and unlock (closing the descriptor drops the lock)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)


def describe_holder(file: Path, wait_s: float = 1.0) -> str:
    """'run process pid 123 on host h, started 2026-..., medharness run ...' from a lock file (what its holder
    wrote). The holder writes its record just after it gets the lock, so an empty record (or one of an ended
    process, left by a holder that was killed) is read again for up to `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        info = _read_holder(file)
        live = info is not None and (info["host"] != socket.gethostname() or _alive(int(info["pid"])))
        if live or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if info is None:
        return "a process that has not recorded itself yet"
    command = " ".join(str(a) for a in info.get("command") or [])[:200]
    text = (f"{info.get('purpose', 'a')} process pid {info['pid']} on host {info['host']}, started "
            f"{info['started']}" + (f": {command}" if command else ""))
    if not live:
        text += "; that process has ended, so a child it forked (e.g. a model server) still holds the lock"
    return text


def _read_holder(file: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
        int(info["pid"]), str(info["host"]), str(info["started"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # a damaged record: no holder named
        return None
    return info if isinstance(info, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


class RunDir:
    """One run's folder. Create it with `RunDir.create` or reopen it with `RunDir.open`; `log` is its run log,
    changed only through the methods below (each saves run.json atomically).

    `create` and `open(..., writer=PURPOSE)` hold the directory's lock until `close()` (or the `with` block's
    end, or the process's end); `open` without a writer reads (leaderboards, agreement, re-scoring)."""

    def __init__(self, path: Path, runlog: RunLog, lock: RunLock | None = None) -> None:
        self.path = path
        self.log = runlog
        self.lock = lock

    @classmethod
    def create(cls, path: Path, config: RunSettings | ImportSettings, seed: int | None = None,
               label: str | None = None, take_over: bool = False) -> RunDir:
        """A new run directory, locked. `take_over`: a directory that holds no results (see `has_results`) is
        cleared and started afresh, under the lock. `config` is stored as the record it is (a `RunConfig` as
        its `RunSettings`)."""
        cls.check_new(path, take_over)
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock.acquire(path, "run --resume" if take_over else "run")
        try:
            # another process may have written it between the check and the lock
            cls.check_new(path, take_over)
            for leftover in path.iterdir():
                if leftover.name == RUN_FILE or is_temporary_of(leftover.name, RUN_FILE):
                    leftover.unlink()
            shutil.rmtree(path / "samples", ignore_errors=True)
            (path / "samples").mkdir()
            versions = {"python": platform.python_version(), **package_versions(PACKAGES)}
            recorded = scrub_value(config.model_dump())  # no credentials from a URL (core/secrets.py)
            run = cls(path, RunLog(run_id=path.name, label=label, created=now(),
                                   command=[scrub(arg) for arg in sys.argv], config=recorded,
                                   versions=versions, seed=seed), lock)
            run.save()
        except BaseException:
            lock.release()
            raise
        return run

    @staticmethod
    def has_results(path: Path) -> bool:
        """Whether `path` holds anything a run produced beyond its bookkeeping: a row, a verdict or a file
        medharness did not write. A directory without (an empty one, one left by a run that stopped before its
        first sample or was killed while being created) can be taken over."""
        if not path.is_dir():
            return False
        for item in path.iterdir():
            if item.name in (RUN_FILE, LOCK_FILE) or is_temporary_of(item.name, RUN_FILE):
                continue
            if item.name == "samples" and item.is_dir() and not any(
                    f.stat().st_size for f in item.iterdir() if f.is_file()) and not any(
                    f.is_dir() for f in item.iterdir()):
                continue
            return True
        return False

    @classmethod
    def check_new(cls, path: Path, take_over: bool = False) -> None:
        """Refuse a new run in a directory that is not free (see `has_results`); a directory holding only a
        stopped run's bookkeeping is free with `take_over` (`--resume`)."""
        if not path.exists():
            return
        if not path.is_dir():
            raise ConfigError(f"--output {path} is a file, not a directory")
        if cls.has_results(path):
            raise ConfigError(f"run directory {path} already exists: pass --resume to continue it, "
                              "or choose another --output")
        if not take_over and any(p.name != LOCK_FILE for p in path.iterdir()):
            raise ConfigError(f"run directory {path} holds a run that stopped before its first sample (no "
                              "results): pass --resume to take it over, or choose another --output")

    @classmethod
    def open(cls, path: Path, writer: str | None = None) -> RunDir:
        """Read a run directory; with `writer` (what the caller does: "run", "judge"), lock it first."""
        file = path / RUN_FILE
        if not file.is_file():
            hint = ("; it holds no results: `run --resume` takes it over"
                    if path.is_dir() and not cls.has_results(path) else "")
            raise DataError(f"{path} is not a run directory (no {RUN_FILE}){hint}")
        lock = RunLock.acquire(path, writer) if writer else None
        try:
            return cls(path, _load_log(file), lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def close(self) -> None:
        """Release the lock (if this object holds it); reading stays possible."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save(self) -> None:
        self.log = self.log.model_copy(update={"updated": now()})
        write_json_atomic(self.path / RUN_FILE, json_safe(self.log.model_dump(mode="json")), allow_nan=False)

    def _update(self, **fields: Any) -> None:
        self.log = self.log.model_copy(update=fields)
        self.save()

    def set_status(self, status: RunStatus, error: str | None = None) -> None:
        self._update(status=status, error=error or None)

    def set_model(self, fingerprint: str, attn_implementation: str | None = None,
                  trained_from: TrainedFrom | None = None) -> None:
        self._update(model=fingerprint, attn_implementation=attn_implementation, trained_from=trained_from)

    def set_origin(self, origin: str) -> None:
        """Where the rows came from when not generated by this run (e.g. `medharness import`)."""
        self._update(origin=origin)

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

    def discard(self) -> bool:
        """Remove a run directory that never got a single result (a failure before the first sample); return
        whether it was removed."""
        if self.has_results(self.path):
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return True

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    def task_file(self, task: str) -> Path:
        return self.samples_dir / f"{_file_name(task)}.jsonl"

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
            tmp = temporary_file(self.task_file(task))
            tmp.unlink(missing_ok=True)
            _append_lines(tmp, (r.model_dump_json() for r in keep))
            os.replace(tmp, self.task_file(task))
        return len(rows) - len(keep)

    def judgement_file(self, task: str) -> Path:
        return self.path / "judgements" / f"{_file_name(task)}.jsonl"

    def append_judgements(self, task: str, items: Iterable[Judgement]) -> None:
        file = self.judgement_file(task)
        file.parent.mkdir(exist_ok=True)
        _repair(file)
        _append_lines(file, (j.model_dump_json() for j in items))

    def judgements(self, task: str) -> list[Judgement]:
        """Every judgement of a task, in the order written (a re-judged sample appears again, later)."""
        return list(read_jsonl(self.judgement_file(task), Judgement))

    def rows(self, task: str) -> list[ResultRow]:
        with gc_paused():
            return list(read_rows(self.task_file(task)))

    def tasks(self) -> list[str]:
        return sorted(p.stem for p in self.samples_dir.glob("*.jsonl"))


def _file_name(task: str) -> str:
    """A task name as a file name; one that would leave its folder (or name no file) is refused even when
    the schema that read it was bypassed."""
    try:
        return check_safe_name(task, "task name")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


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


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while many records are built. Records hold no reference
    cycles (reference counting frees them), but each collection re-traverses every live row built so far:
    on 100k rows that was half the time of `score RUN_DIR`."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_jsonl(file: Path, record: type[R]) -> Iterator[R]:
    """Records of one JSONL file; a torn final line (a killed run) is skipped, anything else is an error."""
    if file.exists():
        yield from parse_jsonl(file, read_text(file, "run file").split("\n"), record)


def parse_jsonl(file: Path, lines: Sequence[str], record: type[R], first: int = 1,
                last: int | None = None) -> Iterator[R]:
    """Records of `lines` of `file`, numbered from `first`. A line that is no record is an error naming its
    line, except the file's final line (number `last`, by default the last of `lines`): with no newline after
    it, it was torn by a kill and is skipped."""
    return _parse_lines(file, lines, record.model_validate_json, record.__name__, first, last)


_ROW_TO_SCORE: TypeAdapter[dict[str, Any]] = TypeAdapter(RowToScore)


def parse_rows_to_score(file: Path, lines: Sequence[str] | Iterator[str], first: int = 1,
                        last: int | None = None) -> Iterator[dict[str, Any]]:
    """`parse_jsonl` of a samples file into `RowToScore` dicts: what re-scoring reads of each row. `lines`
    may be an iterator (`split_lines`) where `last` is given."""
    return _parse_lines(file, lines, _ROW_TO_SCORE.validator.validate_json, "ResultRow", first, last)


def split_lines(text: str) -> Iterator[str]:
    """`text.split("\\n")` one line at a time: no list of every line, whose strings are all alive at once."""
    start, find = 0, text.find
    while (end := find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def _parse_lines(file: Path, lines: Sequence[str] | Iterator[str], validate: Callable[[str], T], what: str,
                 first: int, last: int | None) -> Iterator[T]:
    if last is None:
        assert isinstance(lines, Sequence), "the number of the final line, for lines given one at a time"
        last = first + len(lines) - 1
    for number, line in enumerate(lines, first):
        if not line.strip():
            continue
        try:
            yield validate(line)
        except ValidationError as exc:
            if number == last:
                continue
            raise DataError(f"{file}:{number}: not a {what} record: {exc.errors()[0]['msg']}") from None


def read_rows(file: Path) -> Iterator[ResultRow]:
    """Rows of one samples file (see `read_jsonl`); a sample id that appears twice is an error."""
    seen: set[str] = set()
    for row in read_jsonl(file, ResultRow):
        if row.sample.id in seen:
            raise DataError(f"{file}: sample '{row.sample.id}' appears twice")
        seen.add(row.sample.id)
        yield row
