"""The one door for the files users hand to medharness (data files, predictions, sample-id lists; task files
read their text here too): whatever is wrong with a file is an error naming the file and, where it has one,
the line, never a traceback or a silently different value.

- `read_text`: missing, a directory, not a regular file (a FIFO, /dev/zero), unreadable, UTF-16 / not UTF-8
  (with the byte offset), a NUL byte. In two halves for a caller that decodes parts of a file in parallel:
  `read_bytes`, then `decode_text`.
- `read_records`: JSONL (the true line of a bad record), a JSON list (or an object holding one), CSV / TSV /
  pipe-separated text (a row with too few or too many fields, a quote never closed); every record must be a
  mapping (`{"id": ..}`), so a file of bare numbers is refused at its first one.

Plain Python (json, csv): these formats need nothing more, and the errors must carry our file:line.
"""

from __future__ import annotations

import csv
import io
import json
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.core.errors import DataError, MedHarnessError

FORMATS = ("json", "jsonl", "csv", "tsv", "psv")
DELIMITERS = {"csv": ",", "tsv": "\t", "psv": "|"}
_BOMS = {b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}


@dataclass(frozen=True)
class Record:
    """One record of a data file and where it is (`file:line`, or `file: record N` in a JSON list)."""

    where: str
    data: dict[str, Any]


def read_text(path: Path, what: str = "file", error: Callable[[str], MedHarnessError] = DataError) -> str:
    """The file's text (UTF-8, a leading BOM dropped); every failure is `error("PATH: ...")`. Only a regular
    file is read: a FIFO would block forever and a device such as /dev/zero never ends."""
    return decode_text(path, read_bytes(path, what, error), what, error)


def check_regular(path: Path, what: str = "file",
                  error: Callable[[str], MedHarnessError] = DataError) -> None:
    """`path` is a regular file, or `error` says what it is instead (missing, a directory, a FIFO or device:
    opening a FIFO blocks, /dev/zero never ends). For a reader that opens the file itself (a zip)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: not a regular file (a pipe, socket or device), so not a {what}")


def read_bytes(path: Path, what: str = "file", error: Callable[[str], MedHarnessError] = DataError) -> bytes:
    """`read_text`'s first half: the bytes of a regular file that does not start as UTF-16, unchecked as
    UTF-8 (a caller that decodes them in parts gets `decode_text`'s error where one fails)."""
    check_regular(path, what, error)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    bom = next((name for mark, name in _BOMS.items() if raw.startswith(mark)), None)
    if bom:
        raise error(f"{path}: the {what} is encoded as {bom}; save it as UTF-8")
    return raw


def decode_text(path: Path, raw: bytes, what: str = "file",
                error: Callable[[str], MedHarnessError] = DataError) -> str:
    """`read_text`'s second half: `raw` (from `read_bytes`) as text, or the error naming the line of its first
    byte that is not UTF-8, or of its first NUL."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: the {what} is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                    f"{exc.start}); save it as UTF-8") from None
    if "\0" in text:
        raise error(f"{path}:{text[: text.index(chr(0))].count(chr(10)) + 1}: the {what} holds a NUL byte "
                    "(a binary file?)")
    return text


def read_records(path: Path, fmt: str, fieldnames: list[str] | None = None,
                 what: str = "data file") -> list[Record]:
    """Every record of a data file in `fmt` (one of FORMATS). tsv/psv split on the separator without quoting
    (the last field keeps further separators); csv follows RFC 4180 quoting."""
    text = read_text(path, what)
    if fmt == "jsonl":
        return [_record(path, f"{path}:{n}", parse_json(path, line, n))
                for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if fmt == "json":
        data = parse_json(path, text, None)
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), data)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records (or an object holding one), "
                            f"got {_kind(data)}")
        return [_record(path, f"{path}: record {i + 1}", r) for i, r in enumerate(data)]
    if fmt == "csv":
        return _csv(path, text, fieldnames)
    if fmt in DELIMITERS:
        return _delimited(path, text, DELIMITERS[fmt], fieldnames)
    raise DataError(f"{path}: unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def parse_json(path: Path, text: str, line: int | None = None) -> Any:
    """One JSON value of a user's file (`line`: the JSONL line it is on). Errors name the file and the line; a
    lone surrogate (`"\\ud800"`, valid JSON that no UTF-8 file can hold) becomes U+FFFD, so one bad
    character never stops a run after its folder exists."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:  # name the file's line: in JSONL, the record's own
        at = line if line is not None else exc.lineno
        column = exc.colno if line is None or exc.lineno == 1 else f"{exc.lineno}:{exc.colno}"
        raise DataError(f"{path}:{at}: not valid JSON ({exc.msg} at column {column})") from None
    except RecursionError:
        raise DataError(f"{path}:{line or 1}: JSON nested too deeply to read") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise DataError(f"{path}:{line or 1}: cannot read a JSON value ({exc})") from None
    return _no_lone_surrogates(value) if _SURROGATE_ESCAPE.search(text) else value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")  # after json.loads, pairs are one character: these are lone


def _no_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_no_lone_surrogates(k): _no_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_lone_surrogates(v) for v in value]
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"


def _record(path: Path, where: str, value: Any) -> Record:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a record (an object of fields), got {_kind(value)}")
    return Record(where, value)


def _fields_error(where: str, got: int, names: list[str]) -> DataError:
    return DataError(f"{where}: {got} field(s), expected {len(names)} ({', '.join(str(n) for n in names)})")


def _csv(path: Path, text: str, fieldnames: list[str] | None) -> list[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: list[Record] = []
    names = list(fieldnames) if fieldnames else None
    start = 1
    try:
        for values in reader:
            where, start = f"{path}:{start}", reader.line_num + 1
            if not values:
                continue
            if names is None:
                names = [v.strip() for v in values]
                continue
            if len(values) != len(names):
                raise _fields_error(where, len(values), names)
            out.append(Record(where, dict(zip(names, values, strict=True))))
    except csv.Error as exc:
        detail = "a quoted field opened here is never closed" if "end of data" in str(exc) else str(exc)
        raise DataError(f"{path}:{start}: not valid CSV: {detail}") from None
    return out


def _delimited(path: Path, text: str, sep: str, fieldnames: list[str] | None) -> list[Record]:
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    names = fieldnames
    if names is None:
        if not lines:
            return []
        names = [h.strip() for h in lines.pop(0)[1].split(sep)]
    out = []
    for n, line in lines:
        values = line.split(sep, len(names) - 1)
        if len(values) != len(names):
            raise _fields_error(f"{path}:{n}", len(values), names)
        out.append(Record(f"{path}:{n}", dict(zip(names, values, strict=True))))
    return out
