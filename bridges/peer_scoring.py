"""medharness's scorer as a peer's exported task calls it (`process_results` of the exported `utils.py`)."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from medharness.core.records import Generation, Sample
from medharness.scoring.recipe import Recipe
from medharness.taskfiles.task import load_task, recipe_for


@lru_cache(maxsize=8)
def _recipe(task: str, prompt: str | None) -> Recipe:
    ref: str | Path = Path(task) if task.endswith((".yaml", ".yml")) else task
    return recipe_for(load_task(ref, {"prompt": prompt} if prompt else {}))


def score_text(spec: dict[str, Any], sample_json: str, text: str) -> dict[str, float]:
    """Every metric label of the exported task -> this text's score (NaN: unscored for this sample)."""
    recipe = _recipe(str(spec["task"]), spec.get("prompt"))
    sample = Sample.model_validate_json(sample_json)
    _, scores = recipe.score(sample, Generation(sample_id=sample.id, text=text))
    return {label: float(scores.get(label, math.nan)) for label in spec["metrics"]}
