"""The one way a file is written whole: to a temporary file beside it (this process's own name), flushed to
disk, then renamed over the target, so a reader, or a run killed mid-write, sees the old file or the new one
and never a torn one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_temporary_of(name: str, target: str) -> bool:
    """Whether the file name `name` is a temporary file of `target` (one a killed writer left behind)."""
    return (name.startswith(f".{target}.") and name.endswith(".tmp")) or name == f"{target}.tmp"


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write (by any writer: a library's `save`), renamed over
    `path` when the block ends without an error; removed if it raises."""
    tmp = temporary_file(path)
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any, indent: int = 2, allow_nan: bool = True) -> None:
    """`data` as JSON (objects it cannot encode as their `str`); `allow_nan=False` refuses NaN / infinity,
    which strict JSON readers reject."""
    write_text_atomic(path, json.dumps(data, indent=indent, allow_nan=allow_nan, default=str) + "\n")
