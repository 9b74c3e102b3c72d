"""Parsers for structured answers: option letters, class labels and bounding boxes."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence
from typing import Any

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.boxes import COORDS, box_problem, find_boxes, to_absolute
from medharness.scoring.normalize import ARTICLES, NEGATIONS, clean_text
from medharness.scoring.normalize import harness as norm_text
from medharness.scoring.parsers.base import json_answer, parser, strip_end_markers

LETTERS = string.ascii_uppercase


def _ok(name: str, value: Any, note: str = "") -> Answer:
    return Answer(value=value, parser=name, note=note)


def _fail(name: str, note: str) -> Answer:
    return Answer(value=None, parser=name, note=note)

# --- choice ----------------------------------------------------------------------------------

_CHOICE_PREFIX = re.compile(
    r"^(?:so,?\s+)?(?:the\s+)?(?:correct\s+|final\s+|best\s+)?(?:answer|option|choice)\b(?:\s+is\b)?\s*[:：]?\s*",
    re.IGNORECASE,
)
_BARE_LETTER = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
_LEADING_LETTER = re.compile(r"\(?([A-Z])\s*[).:]\s+(\S.*)", re.DOTALL)
# Another letter after the first one: "(A) or (B)", "A. B", "A) and C".
_OTHER_LETTER = re.compile(r"\(([A-Z])\)|^(?:or|and|/|,)\s*\(?([A-Z])\b|^\(?([A-Z])\)?[.:)]?$")


def letter_of(target: Any, choices: Sequence[str]) -> str | None:
    """The option letter of a gold `target` given as a letter ("B", "(B)") or as an option's text."""
    text = str(target).strip()
    if len(text) == 3 and text[0] == "(" and text[2] == ")":
        text = text[1]
    if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
        return text.upper()
    matches = [LETTERS[i] for i, c in enumerate(choices) if norm_text(c) == norm_text(text)]
    return matches[0] if len(matches) == 1 else None


@parser("choice")
def choice(text: str, sample: Sample) -> Answer:
    """Exactly one option, by letter ("B", "(B)", "B.", "B) text", "The answer is B") or by its text.

    Letters are A, B, C, ... by position in `sample.choices`. Several letters, a letter whose text
    names another option, an out-of-range letter, or text equal to no/several options -> None."""
    if not sample.choices:
        return _fail("choice", "sample has no choices")
    letters = LETTERS[: len(sample.choices)]
    cleaned = clean_text(strip_end_markers(json_answer(text))).strip()
    body = _CHOICE_PREFIX.sub("", cleaned, count=1).rstrip(". \t\n").strip()
    if not body:
        return _fail("choice", "empty output")
    options = [norm_text(c) for c in sample.choices]
    bare = _BARE_LETTER.fullmatch(body)
    lead = None if bare else _LEADING_LETTER.fullmatch(body)
    if bare or lead:
        letter = (bare or lead).group(1).upper()  # type: ignore[union-attr]
        if letter not in letters:
            return _fail("choice", f"letter {letter} is not an option ({letters[0]}-{letters[-1]})")
        if lead:
            rest = lead.group(2).rstrip(". ")
            named = [LETTERS[i] for i, o in enumerate(options) if o == norm_text(rest)]
            others = {g for m in _OTHER_LETTER.finditer(rest) for g in m.groups() if g and g != letter}
            if others or (named and letter not in named):
                return _fail("choice", f"ambiguous: letter {letter} followed by {rest[:40]!r}")
        return _ok("choice", letter)
    named = [LETTERS[i] for i, o in enumerate(options) if o and o == norm_text(body)]
    if len(named) == 1:
        return _ok("choice", named[0])
    if named:
        return _fail("choice", "text equals several options")
    return _fail("choice", "no single option letter or option text")


# --- label -----------------------------------------------------------------------------------


@parser("label")
def label(text: str, sample: Sample) -> Answer:
    """The one class name among `sample.choices` that the text names.

    First `harness`-normalised equality; else the only class name found as whole words (a class found
    only inside a longer found class name, e.g. "nevus" in "melanocytic nevus", does not count).
    A negated class name ("not melanoma", "isn't a nevus") is a hedge: unparsed. Returns the class as spelled
    in choices."""
    if not sample.choices:
        return _fail("label", "sample has no class names (choices)")
    norm = norm_text(json_answer(text))
    if not norm:
        return _fail("label", "empty output")
    names = _class_names(sample.choices)
    exact = [c for c, n in names.items() if n == norm]
    if len(exact) == 1:
        return _ok("label", exact[0])
    padded = f" {norm} "
    found = [c for c, n in names.items() if n and f" {n} " in padded]
    negation = f"(?:{'|'.join(NEGATIONS)})(?: (?:{'|'.join(ARTICLES)}))?"
    if any(re.search(rf"(?:^| ){negation} {re.escape(names[c])}(?: |$)", norm) for c in found):
        return _fail("label", "a negated class name (hedge)")
    found = [c for c in found
             if not any(names[o] != names[c] and f" {names[c]} " in f" {names[o]} " for o in found)]
    if len(found) == 1:
        return _ok("label", found[0])
    return _fail("label", "several class names" if found else "no class name")


@functools.lru_cache(maxsize=256)
def _class_names(choices: tuple[str, ...]) -> dict[str, str]:
    """Each class name -> its `norm_text` (a task's choices are the same on every sample: built once)."""
    return {c: norm_text(c) for c in choices}


# --- boxes -----------------------------------------------------------------------------------

@parser("json_bbox")
def json_bbox(text: str, sample: Sample, coords: str = "absolute", pick: str = "only",
              resized_size: Sequence[float] | None = None) -> Answer:
    """A box `[x1, y1, x2, y2]` from JSON in the text, converted to absolute pixels of the image.

    Finds every list of exactly 4 numbers (bare, `{"bbox_2d": [...]}`, `[{"bbox": [...]}]`, in
    ``` fences). `pick`: "only" (default: several different boxes -> None), "first" or "last".
    `coords` declares the model's convention (see `to_absolute`); sizes come from
    `sample.meta["image_size"]` and `sample.meta["resized_size"]` (or the `resized_size` arg).
    Non-finite or reversed coordinates -> None, never swapped."""
    if coords not in COORDS:
        raise ConfigError(f"json_bbox: unknown coords {coords!r}; use one of {', '.join(COORDS)}")
    if pick not in ("only", "first", "last"):
        raise ConfigError(f"json_bbox: pick must be only, first or last, got {pick!r}")
    boxes = find_boxes(text)
    if not boxes:
        return _fail("json_bbox", "no [x1, y1, x2, y2] list of 4 numbers")
    distinct = {tuple(b) for b in boxes}
    if pick == "only" and len(distinct) > 1:
        return _fail("json_bbox", f"{len(distinct)} different boxes")
    box = boxes[-1] if pick == "last" else boxes[0]
    problem = box_problem(box)
    if problem:
        return _fail("json_bbox", problem)
    image_size = sample.meta.get("image_size")
    resized = resized_size or sample.meta.get("resized_size")
    if coords != "absolute" and not image_size:
        return _fail("json_bbox", f"coords {coords}: sample.meta has no image_size")
    if coords == "resized" and not resized:
        return _fail("json_bbox", "coords resized: no resized_size (sample.meta or args)")
    try:
        absolute = to_absolute(box, coords, image_size, resized)
    except (ConfigError, ValueError, TypeError, ZeroDivisionError) as exc:
        return _fail("json_bbox", f"bad image/resized size: {exc}")
    problem = box_problem(absolute)
    return _fail("json_bbox", problem) if problem else _ok("json_bbox", absolute)
