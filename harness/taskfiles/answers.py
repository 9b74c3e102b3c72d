"""Answers written in a prompt variant's own format, so that the variant's parser reads them back.

One writer for everything that answers without a model: the baselines (`backends/baseline.py`) and the
trainers' gold and rejected turns (`trainers/targets.py`). `\\boxed{label}` for a boxed chain,
`<answer>..</answer>` for an answer-tag chain, an option letter for `choice`, a JSON box in the chain's
coordinate convention for `json_bbox`, and a think block only when the caller gives reasoning and the variant
asks for one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from medharness.core.records import Sample
from medharness.scoring.boxes import from_absolute
from medharness.scoring.parsers import split_spec
from medharness.taskfiles.task import Task

THINK_FORMATS = ("r1", "r1_boxed")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def parser_steps(task: Task, prompt: str) -> list[tuple[str, dict[str, Any]]]:
    """The variant's parser chain as (name, args) steps (the task's scoring parser when the variant has
    none)."""
    variant = task.config.prompts.variants[prompt]
    return [split_spec(s) for s in (variant.parser or task.config.scoring.parser)]


def wants_think(task: Task, prompt: str) -> bool:
    """Whether the variant asks for a `<think>` block (an r1 format metric, or `<think>` in its prompt)."""
    variant = task.config.prompts.variants[prompt]
    for spec in variant.metrics:
        if isinstance(spec, dict) and spec.get("name") == "format_compliance" and \
                (spec.get("args") or {}).get("format", "r1") in THINK_FORMATS:
            return True
    return "<think>" in variant.user


def option_letter(target: Any, choices: Sequence[str]) -> str:
    """An option given as a letter or as its text -> its letter (the text itself when it is neither)."""
    text = str(target).strip()
    if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
        return text.upper()
    for i, choice in enumerate(choices):
        if choice.strip().lower() == text.lower():
            return LETTERS[i]
    return text


def answer_value_text(task: Task, prompt: str, sample: Sample, value: Any) -> str:
    """The bare answer `value` as the variant's innermost parser step reads it."""
    for name, args in parser_steps(task, prompt):
        if name == "json_bbox":
            try:
                box = value if isinstance(value, list) else json.loads(str(value))
            except ValueError:
                return str(value)  # not a box (e.g. a constant baseline's text): the parser will say so
            box = from_absolute(box, str(args.get("coords", "absolute")), sample.meta.get("image_size"),
                                args.get("resized_size") or sample.meta.get("resized_size"))
            return json.dumps([round(v, 1) for v in box])
        if name == "choice":
            return option_letter(value, sample.choices)
    return str(value)


def format_answer(task: Task, prompt: str, sample: Sample, value: Any, think: str | None = None) -> str:
    """`value` wrapped in the variant's format: `\\boxed{}` and/or `<answer>` tags, preceded by
    `<think>{think}</think>` when `think` is given and the variant asks for a think block."""
    inner = answer_value_text(task, prompt, sample, value)
    names = [name for name, _ in parser_steps(task, prompt)]
    if "boxed" in names:
        inner = f"\\boxed{{{inner}}}"
    if "answer_tag" in names:
        inner = f"<answer>{inner}</answer>"
    if think is not None and wants_think(task, prompt):
        inner = f"<think>{think}</think>{inner}"
    return inner
