"""Parser registry and chains: model text -> Answer. Unparseable is Answer(value=None), never an exception.

A parser is a function `fn(text, sample, **args) -> Answer`, registered with `@parser("name")`.
Task files name a chain of parsers, e.g. `parser: [answer_tag, yes_no]`: each step reads the
previous step's (string) value; the first step that fails makes the whole answer unparsed.
A built-in parser reads the text and the sample's target, choices and meta, never its question, id or image
paths (see `medharness.scoring.metrics.base`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.core.registry import Registry, check_arguments

ParserFn = Callable[..., Answer]
PARSERS: Registry[ParserFn] = Registry("parser")


def parser(name: str) -> Callable[[ParserFn], ParserFn]:
    return PARSERS.register(name)


END_MARKERS = ("<|im_end|>", "<|endoftext|>")


def strip_end_markers(text: str) -> str:
    """Strip whitespace and any trailing `<|im_end|>` / `<|endoftext|>` markers (repeated)."""
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for marker in END_MARKERS:
            if text.endswith(marker):
                text = text[: -len(marker)].rstrip()
                changed = True
    return text


# Keys whose value is the answer when a whole output is one JSON object (lm-eval's `{"answer": "yes"}`).
ANSWER_KEYS = frozenset({"answer", "final_answer"})
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def json_answer(text: str) -> str:
    """The answer an output holds when it is one JSON object with one answer key (`answer`, `final_answer`,
    any case; a ```json fence allowed) whose value is text or a finite number: `{"answer":"yes"}` -> "yes".
    Any other text is returned unchanged (a box object, a list, a bool, two answer keys, broken JSON)."""
    body = _FENCE.sub("", strip_end_markers(text)).strip()
    if not (body.startswith("{") and body.endswith("}")) or len(body) > 100_000:
        return text
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return text
    keys = [k for k in data if k.strip().lower() in ANSWER_KEYS] if isinstance(data, dict) else []
    if len(keys) != 1:
        return text
    value = data[keys[0]]
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(value)):
        return str(value)
    return text


StepSpec = str | dict[str, Any]


class ParserChain:
    """A resolved list of parser steps, callable as one parser."""

    def __init__(self, steps: Sequence[StepSpec]) -> None:
        if not steps:
            raise ConfigError("a parser chain needs at least one step")
        self.steps: list[tuple[str, dict[str, Any], ParserFn]] = []
        for step in steps:
            name, args = split_spec(step)
            fn = PARSERS.get(name)
            check_arguments(fn, args, 2, f"parser '{name}'")
            self.steps.append((name, args, fn))
        self.name = "+".join(n for n, _, _ in self.steps)

    def __call__(self, text: str, sample: Sample) -> Answer:
        answer = Answer(value=text)
        for name, args, fn in self.steps:
            if not isinstance(answer.value, str):
                return Answer(value=None, parser=self.name,
                              note=f"{name}: previous step gave a non-text value")
            answer = fn(answer.value, sample, **args)
            if answer.value is None:
                return Answer(value=None, parser=self.name, note=f"{name}: {answer.note}".rstrip(": "))
        # the last step's answer under the chain's name (a one-step chain's own answer: nothing rebuilt)
        return answer if answer.parser == self.name else Answer(answer.value, self.name, answer.note)


def split_spec(step: StepSpec) -> tuple[str, dict[str, Any]]:
    """`"name"` or `{"name": {args}}` or `{"name": "x", "args": {...}}` -> (name, args)."""
    if isinstance(step, str):
        return step, {}
    if isinstance(step, dict) and set(step) <= {"name", "args"} and "name" in step:
        return str(step["name"]), dict(step.get("args") or {})
    if isinstance(step, dict) and len(step) == 1:
        ((name, args),) = step.items()
        return str(name), dict(args or {})
    raise ConfigError(f"a parser step is a name or {{name: {{args}}}}, got {step!r}")
