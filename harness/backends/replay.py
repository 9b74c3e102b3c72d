"""`replay`: answers read from a predictions file, so any external model's outputs run through the harness."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.backends.base import Backend, Request, backend
from medharness.backends.predictions import Prediction, read_predictions
from medharness.core.records import Generation


@backend("replay")
class ReplayBackend(Backend):
    """`--model preds.jsonl --backend replay [--id-field F --prediction-field F]`."""

    needs_images = False
    cacheable = False

    def __init__(self, model: str, id_field: str | None = None, prediction_field: str | None = None,
                 **options: Any) -> None:
        super().__init__(model, **options)
        self.path = Path(model)
        self.id_field, self.prediction_field = id_field, prediction_field
        self.predictions: dict[str, Prediction] = {}

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12] if self.path.is_file() else "missing"
        return f"replay:{self.path.resolve()}@{digest}"

    def prepare(self, task: Any, samples: Sequence[Any]) -> None:
        self.predictions = read_predictions(self.path, self.id_field, self.prediction_field, task=task.name)

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        out = []
        for req in requests:
            sid = req.prompt.sample_id
            if sid in self.predictions:
                out.append(self.predictions[sid].generation(sid, self.fingerprint, finish_reason="replay"))
            else:
                out.append(Generation(sample_id=sid, text="", model=self.fingerprint,
                                      error=f"no prediction for id '{sid}' in {self.path}"))
        return out
