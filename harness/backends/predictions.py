"""Reading external predictions files (.jsonl, .json list, .csv, or a run's samples/*.jsonl)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.core.datafiles import Record, check_regular, read_records
from medharness.core.errors import DataError
from medharness.core.records import Generation

ID_FIELDS = ("id", "qid", "sample_id", "question_id")
PREDICTION_FIELDS = ("prediction", "pred", "response", "output", "answer", "text")


@dataclass(frozen=True)
class Prediction:
    """One predicted text; `error` (a null or non-text prediction) makes it that sample's error, never a
    value."""

    text: str
    error: str | None = None

    def generation(self, sample_id: str, model: str, finish_reason: str | None = None) -> Generation:
        return Generation(sample_id=sample_id, text=self.text, model=model, error=self.error,
                          finish_reason=None if self.error else finish_reason)


def _records(path: Path) -> list[Record]:
    check_regular(path, "predictions file")  # missing, a directory, a FIFO or a device
    fmt = {".csv": "csv", ".jsonl": "jsonl"}.get(path.suffix, "json")
    return read_records(path, fmt, what="predictions file")


def _pick(record: dict[str, Any], given: str | None, fallbacks: tuple[str, ...],
          what: str, path: Path) -> str:
    if given:
        if given not in record:
            raise DataError(f"{path}: no field '{given}' for the {what}; fields: {sorted(record)}")
        return given
    for name in fallbacks:
        if name in record:
            return name
    raise DataError(f"{path}: cannot tell which field holds the {what} (tried {', '.join(fallbacks)}); "
                    f"fields: {sorted(record)}; pass --{what.replace(' ', '-')}-field")


def _prediction(value: Any, where: str, field: str) -> Prediction:
    """Text as it is; a number as its digits (a count, a grade); anything else is the sample's error."""
    if isinstance(value, str):
        return Prediction(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Prediction(str(value))
    shown = "null" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"
    return Prediction("", f"{where}: field '{field}' is {shown}, not a predicted text")


def _sample_id(value: Any, where: str, field: str) -> str:
    if value is None or isinstance(value, (bool, list, dict)) or not str(value).strip():
        raise DataError(f"{where}: field '{field}' is {json.dumps(value)[:40]}, not a sample id")
    return str(value)


def read_predictions(path: Path, id_field: str | None = None, prediction_field: str | None = None,
                     task: str | None = None) -> dict[str, Prediction]:
    """sample id -> prediction. Duplicate or empty ids are errors naming the line. A run's samples file works
    too."""
    records = _records(path)
    if not records:
        raise DataError(f"{path}: no predictions")
    first = records[0].data
    pairs: list[tuple[str, str, Prediction]] = []
    if "sample" in first and "generation" in first:  # a medharness samples/<task>.jsonl
        for r in records:
            sample, gen = r.data.get("sample"), r.data.get("generation")
            if not isinstance(sample, dict) or not isinstance(gen, dict):
                raise DataError(f"{r.where}: not a medharness row (sample and generation objects)")
            if task is None or r.data.get("task") == task:
                pairs.append((r.where, _sample_id(sample.get("id"), r.where, "sample.id"),
                              _prediction(gen.get("text") or "", r.where, "generation.text")))
    else:
        idf = _pick(first, id_field, ID_FIELDS, "id", path)
        pf = _pick(first, prediction_field, PREDICTION_FIELDS, "prediction", path)
        for r in records:
            if task is not None and "task" in first and r.data.get("task") != task:
                continue
            if idf not in r.data or pf not in r.data:
                raise DataError(f"{r.where}: the record lacks '{idf}' or '{pf}'")
            pairs.append((r.where, _sample_id(r.data[idf], r.where, idf),
                          _prediction(r.data[pf], r.where, pf)))
    out: dict[str, Prediction] = {}
    for where, sid, pred in pairs:
        if sid in out:
            raise DataError(f"{where}: duplicate prediction id '{sid}'")
        out[sid] = pred
    return out
