"""Helpers of the `medharness_phantom_presence` lm-eval task (bench/backends.py compares lm-eval with
medharness).

The docs are `phantom_presence.jsonl` next to this file (the 200 test samples of medharness's
`phantom_presence` task: id, image reference, question, target); the images are regenerated from their
`phantom:SEED/INDEX/SIZE` reference by medharness's own generator, so lm-eval and medharness see the same
pixels and do the same work to get them (about 4 ms per 224 px image). Needs medharness importable next to
lm-eval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_docs(data_files: str = "phantom_presence.jsonl", **_metadata: Any) -> Any:
    """`custom_dataset`: the JSONL file (a path relative to this folder) as a DatasetDict with a `test`
    split."""
    import datasets

    path = Path(data_files)
    path = path if path.is_absolute() else HERE / path
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_image(doc: dict[str, Any]) -> list[Any]:
    from medharness.taskfiles import phantom

    return [phantom.open_image(doc["image"])]
