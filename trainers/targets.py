"""Training targets: answers written in a prompt variant's own format (`medharness.taskfiles.answers`): the
SFT/DPO gold turn, and DPO's rejected answers.

The gold is written so that the variant's parser reads it back (`<think>..</think><answer>..</answer>`,
`\\boxed{label}`, a JSON box in the variant's coordinate convention, an option letter): `rewards.py` checks
that it does, by scoring the gold text through the same `Recipe` that `run` scores with.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.core.errors import ConfigError, DataError
from medharness.core.records import ResultRow, Sample
from medharness.taskfiles.answers import format_answer as core_format_answer
from medharness.taskfiles.answers import option_letter
from medharness.taskfiles.task import Task, recipe_for

DEFAULT_THINK = "I look at the image and answer the question."


def format_answer(task: Task, prompt: str, sample: Sample, value: Any, think: str | None = None) -> str:
    """`value` in the variant's format (`medharness.taskfiles.answers.format_answer`), with a think block
    where the variant asks for one: `think`, else the sample's `reasoning` meta, else a fixed sentence."""
    reasoning = think or str(sample.meta.get("reasoning") or DEFAULT_THINK)
    return core_format_answer(task, prompt, sample, value, think=reasoning)


def gold_text(task: Task, prompt: str, sample: Sample) -> str:
    if sample.target is None:
        raise DataError(f"task {task.name}: sample {sample.id} has no gold answer to train on")
    return format_answer(task, prompt, sample, sample.target)


# -- DPO rejected answers -----------------------------------------------------------------------------------

def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str).lower()


def rejected_texts(task: Task, prompt: str, samples: Sequence[Sample], source: str,
                   seed: int) -> dict[str, str]:
    """Sample id -> a wrong answer in the variant's format, from `source`:
    `other_label` (another class / option / answer value seen among the samples), `other_sample` (another
    sample's gold answer text, with a different answer) or `run:DIR` (the wrong answers of a finished
    medharness run, `DIR/samples/<task>.jsonl`, matched by id and image). Samples without a wrong answer are
    left out."""
    rng = random.Random(seed)
    if source.startswith("run:"):
        return _from_run(task, source[4:], {s.id: s for s in samples})
    out: dict[str, str] = {}
    if source == "other_label":
        values = {_key(s.target): s.target for s in samples if s.target is not None}
        for s in samples:
            pool = [c for c in s.choices if _key(c) != _key(s.target) and
                    option_letter(s.target, s.choices) != option_letter(c, s.choices)] or \
                   [v for k, v in sorted(values.items()) if k != _key(s.target)]
            if pool:
                out[s.id] = format_answer(task, prompt, s, rng.choice(pool))
        return out
    if source == "other_sample":
        for s in samples:
            others = [o for o in samples if o.id != s.id and _key(o.target) != _key(s.target)]
            if others:
                out[s.id] = gold_text(task, prompt, rng.choice(others))
        return out
    raise ConfigError(f"unknown rejected-answer source {source!r}: other_label, other_sample or run:DIR")


def _from_run(task: Task, run_dir: str, wanted: dict[str, Sample]) -> dict[str, str]:
    file = Path(run_dir) / "samples" / f"{task.name}.jsonl"
    if not file.is_file():
        raise DataError(f"rejected: run:{run_dir} has no {file.relative_to(run_dir)} (a finished medharness "
                        f"run of the base model on task {task.name})")
    primary_spec = recipe_for(task).sample_primary
    if primary_spec is None:
        raise ConfigError(f"rejected: run:{run_dir}: task {task.name} has no per-sample metric to tell a "
                          "wrong answer by")
    primary = primary_spec.label
    out: dict[str, str] = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = ResultRow.model_validate_json(line)
        except ValueError as exc:
            raise DataError(f"{file}:{number}: not a result row: {exc}") from None
        score = row.scores.get(primary)
        wrong = (row.generation.error is None and row.generation.text.strip()
                 and (score is None or score < 1.0))
        mine = wanted.get(row.sample.id)
        if mine is not None and mine.images == row.sample.images and wrong and score is not None:
            out[row.sample.id] = row.generation.text
    return out
