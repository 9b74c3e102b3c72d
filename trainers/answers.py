"""Answers written in a prompt variant's own format: the SFT/DPO gold turn, and DPO's rejected answers.

The gold is written so that the variant's parser reads it back (`<think>..</think><answer>..</answer>`,
`\\boxed{label}`, a JSON box in the variant's coordinate convention, an option letter): `rewards.py` checks
that it does, by scoring the gold text through the same `Recipe` that `run` scores with.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from medharness.boxes import from_absolute
from medharness.errors import ConfigError, DataError
from medharness.parsers import split_spec
from medharness.records import ResultRow, Sample
from medharness.task import Task

THINK_FORMATS = ("r1", "r1_boxed")
DEFAULT_THINK = "I look at the image and answer the question."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _steps(task: Task, prompt: str) -> list[tuple[str, dict[str, Any]]]:
    variant = task.config.prompts.variants[prompt]
    return [split_spec(s) for s in (variant.parser or task.config.scoring.parser)]


def _wants_think(task: Task, prompt: str) -> bool:
    variant = task.config.prompts.variants[prompt]
    for spec in variant.metrics:
        if isinstance(spec, dict) and spec.get("name") == "format_compliance" and \
                (spec.get("args") or {}).get("format", "r1") in THINK_FORMATS:
            return True
    return "<think>" in variant.user


def _letter(target: Any, choices: Sequence[str]) -> str:
    text = str(target).strip()
    if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
        return text.upper()
    for i, choice in enumerate(choices):
        if choice.strip().lower() == text.lower():
            return LETTERS[i]
    return text


def answer_value_text(task: Task, prompt: str, sample: Sample, value: Any) -> str:
    """The bare answer `value` as the variant's innermost parser step reads it."""
    for name, args in _steps(task, prompt):
        if name == "json_bbox":
            box = from_absolute(value, str(args.get("coords", "absolute")), sample.meta.get("image_size"),
                                args.get("resized_size") or sample.meta.get("resized_size"))
            return json.dumps([round(v, 1) for v in box])
        if name == "choice":
            return _letter(value, sample.choices)
    return str(value)


def format_answer(task: Task, prompt: str, sample: Sample, value: Any, think: str | None = None) -> str:
    """`value` wrapped in the variant's format: `\\boxed{}` and/or `<answer>` tags, with a think block where
    the variant asks for one (the sample's `reasoning` meta when it has one)."""
    inner = answer_value_text(task, prompt, sample, value)
    names = [name for name, _ in _steps(task, prompt)]
    if "boxed" in names:
        inner = f"\\boxed{{{inner}}}"
    if "answer_tag" in names:
        inner = f"<answer>{inner}</answer>"
    if _wants_think(task, prompt):
        reasoning = think or str(sample.meta.get("reasoning") or DEFAULT_THINK)
        inner = f"<think>{reasoning}</think>{inner}"
    return inner


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
    medharness run, `DIR/samples/<task>.jsonl`, matched by id and image). Samples without a wrong answer are left out."""
    rng = random.Random(seed)
    if source.startswith("run:"):
        return _from_run(task, source[4:], {s.id: s for s in samples})
    out: dict[str, str] = {}
    if source == "other_label":
        values = {_key(s.target): s.target for s in samples if s.target is not None}
        for s in samples:
            pool = [c for c in s.choices if _key(c) != _key(s.target) and
                    _letter(s.target, s.choices) != _letter(c, s.choices)] or \
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
    from pathlib import Path

    from medharness.scoring import recipe_for

    file = Path(run_dir) / "samples" / f"{task.name}.jsonl"
    if not file.is_file():
        raise DataError(f"rejected: run:{run_dir} has no {file.relative_to(run_dir)} (a finished medharness run "
                        f"of the base model on task {task.name})")
    primary = recipe_for(task).metrics[0].label
    out: dict[str, str] = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = ResultRow.model_validate_json(line)
        except ValueError as exc:
            raise DataError(f"{file}:{number}: not a result row: {exc}") from None
        score = row.scores.get(primary)
        wrong = row.generation.error is None and row.generation.text.strip() and (score is None or score < 1.0)
        mine = wanted.get(row.sample.id)
        if mine is not None and mine.images == row.sample.images and wrong and score is not None:
            out[row.sample.id] = row.generation.text
    return out
