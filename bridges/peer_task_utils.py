"""The `utils.py` of a task folder written by `medharness export --to lm-eval|lmms-eval` (this file, copied).

The docs are `docs.jsonl` beside it (one exported sample per line: `id`, the rendered prompt, image files, the
target, and the medharness sample as JSON); the images are PNG files under `images/`. Scoring calls
medharness's own scorer (the task's parser chain and metrics, under the task's default convention), so the
peer and medharness give the same number for the same texts: medharness must be importable where the peer
runs.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SPEC_FILE = "medharness_task.json"  # task reference, prompt variant, metric labels (written by the export)


def load_docs(data_files: str = "docs.jsonl", **_metadata: Any) -> Any:
    """lm-eval `custom_dataset`: the docs (a path relative to this folder) as a DatasetDict with a `test`
    split."""
    import datasets

    path = Path(data_files)
    rows = [json.loads(line) for line in (path if path.is_absolute() else HERE / path).read_text(
        encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_image(doc: dict[str, Any]) -> list[Any]:
    """The sample's images, as medharness gives them to a model (RGB)."""
    from PIL import Image

    return [Image.open(HERE / ref).convert("RGB") for ref in doc["images"]]


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    """lmms-eval's name for the same thing."""
    return doc_to_image(doc)


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """lmms-eval: the prompt text alone (its model classes place the images before it, as medharness does)."""
    return str(doc["text"])


@lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    return dict(json.loads((HERE / SPEC_FILE).read_text(encoding="utf-8")))


def process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Score one generated text with medharness's recipe for the task: metric label -> value (NaN: the metric
    does not apply to this sample, left out of the mean)."""
    from medharness.bridges.peer_scoring import score_text

    text = results[0] if results else ""
    return score_text(_spec(), str(doc["sample"]), text if isinstance(text, str) else str(text))


def mean_defined(values: list[float]) -> float:
    """The mean over samples a metric applies to (NaN where it applies to none), as medharness summarises."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan
