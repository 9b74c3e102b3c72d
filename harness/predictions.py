"""Reading external predictions files (.jsonl, .json list, .csv, or a run's samples/*.jsonl)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from medharness.errors import DataError

ID_FIELDS = ("id", "qid", "sample_id", "question_id")
PREDICTION_FIELDS = ("prediction", "pred", "response", "output", "answer", "text")


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"predictions file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".csv":
            return list(csv.DictReader(io.StringIO(text)))
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    return data


def _pick(record: dict[str, Any], given: str | None, fallbacks: tuple[str, ...], what: str, path: Path) -> str:
    if given:
        if given not in record:
            raise DataError(f"{path}: no field '{given}' for the {what}; fields: {sorted(record)}")
        return given
    for name in fallbacks:
        if name in record:
            return name
    raise DataError(f"{path}: cannot tell which field holds the {what} (tried {', '.join(fallbacks)}); "
                    f"fields: {sorted(record)}; pass --{what.replace(' ', '-')}-field")


def read_predictions(path: Path, id_field: str | None = None, prediction_field: str | None = None,
                     task: str | None = None) -> dict[str, str]:
    """sample id -> raw predicted text. Duplicate ids are an error. A run's samples file works too."""
    records = _records(path)
    if not records:
        raise DataError(f"{path}: no predictions")
    first = records[0]
    if "sample" in first and "generation" in first:  # a medharness samples/<task>.jsonl
        pairs = [(str(r["sample"]["id"]), r["generation"].get("text") or "") for r in records
                 if task is None or r.get("task") == task]
    else:
        idf = _pick(first, id_field, ID_FIELDS, "id", path)
        pf = _pick(first, prediction_field, PREDICTION_FIELDS, "prediction", path)
        if task is not None and "task" in first:
            records = [r for r in records if r.get("task") == task]
        pairs = []
        for number, r in enumerate(records, 1):
            if idf not in r or pf not in r:
                raise DataError(f"{path}: record {number} lacks '{idf}' or '{pf}'")
            pairs.append((str(r[idf]), "" if r[pf] is None else str(r[pf])))
    out: dict[str, str] = {}
    for sid, text in pairs:
        if sid in out:
            raise DataError(f"{path}: duplicate prediction id '{sid}'")
        out[sid] = text
    return out
