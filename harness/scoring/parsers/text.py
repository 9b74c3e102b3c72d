"""The built-in text parsers (registered on import; `medharness.scoring.parsers` imports this module).

Every parser is `fn(text, sample, **args) -> Answer`, never raises on any text, and runs in time
linear in the text (no regex that can backtrack catastrophically). Unparseable -> value None + note.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.normalize import harness, negated, tokens, yes_no_of
from medharness.scoring.parsers.base import PARSERS, json_answer, parser, split_spec, strip_end_markers


def _ok(name: str, value: Any, note: str = "") -> Answer:
    return Answer(value=value, parser=name, note=note)


def _fail(name: str, note: str) -> Answer:
    return Answer(value=None, parser=name, note=note)


# --- text ------------------------------------------------------------------------------------


@parser("raw")
def raw(text: str, sample: Sample) -> Answer:
    """The text, stripped; None if empty."""
    text = text.strip()
    return _ok("raw", text) if text else _fail("raw", "empty output")


_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\b(?:\s+is\b)?\s*[:：]?\s*", re.IGNORECASE)


def strip_answer_prefix(text: str) -> str:
    """Drop one leading "Answer:", "Final answer:", "The answer is", "The final answer is:"."""
    return _ANSWER_PREFIX.sub("", text.strip(), count=1)


def hedge(answers: Sequence[str]) -> str | None:
    """Why these candidate answers of one output are a hedge, or None. A hedge is never scored: it is
    unparsed.

    - an answer holding both words `yes` and `no` ("yes or no", "<answer>no</answer> yes");
    - a negated yes or no ("not yes", "isn't a no");
    - yes and no given as two answers ("yes\\nno", two `<answer>` blocks);
    - two answers that read differently after the `harness` normaliser (two `<answer>` or `\\boxed{}`)."""
    readings = [harness(a) for a in answers]
    if any({"yes", "no"} <= set(r.split()) for r in readings):
        return "both yes and no (hedge)"
    for words in (r.split() for r in readings):
        if any(negated(words, i) for i, w in enumerate(words) if w in ("yes", "no")):
            return "a negated yes or no (hedge)"
    distinct = {r for r in readings if r}
    if len(distinct) > 1:
        shown = " / ".join(sorted(distinct))[:60]
        return f"{len(distinct)} different answers (hedge: {shown})"
    return None


@parser("short_answer")
def short_answer(text: str, sample: Sample) -> Answer:
    """First non-empty line, without end markers, an "Answer:"/"The answer is" prefix or final periods.

    A hedge is unparsed: the line holds both yes and no, or a later line is a bare yes/no (prefix allowed:
    "Final answer: no") that disagrees with it ("yes\\nno")."""
    lines = [strip_answer_prefix(line).rstrip(". \t").strip()
             for line in strip_end_markers(json_answer(text)).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return _fail("short_answer", "no non-empty line")
    first = lines[0]
    if not harness(first):
        return _fail("short_answer", f"no answer text, only markup or punctuation ({first[:20]!r})")
    bare = [line for line in lines[1:] if harness(line) in ("yes", "no")]
    if bare:
        readings = {yes_no_of(first), *(harness(line) for line in bare)} - {None}
        if len(readings) > 1:
            return _fail("short_answer", "both yes and no (hedge)")
    problem = hedge([first])
    return _fail("short_answer", problem) if problem else _ok("short_answer", first)


# --- \boxed{...} -----------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{")
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm)\s*\{")


def balanced_end(text: str, start: int) -> int | None:
    """Index just past the `}` that closes the `{` at `start - 1`, or None if never closed."""
    depth = 1
    for brace in _BRACE.finditer(text, start):  # jumps over the text between braces in C
        if brace.group() == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return brace.end()
    return None


_BRACE = re.compile(r"[{}]")


def boxed_content(text: str) -> tuple[str | None, str]:
    """Content of the LAST `\\boxed{...}` (braces balanced), one `\\text{}` wrapper removed."""
    last = None
    for last in _BOXED.finditer(text):
        pass
    if last is None:
        return None, "no \\boxed{}"
    end = balanced_end(text, last.end())
    if end is None:
        return None, "unbalanced braces in the last \\boxed{}"
    content = text[last.end(): end - 1].strip()
    wrapper = _TEXT_WRAPPER.match(content)
    if wrapper and balanced_end(content, wrapper.end()) == len(content):
        content = content[wrapper.end(): -1].strip()
    return (content, "") if content else (None, "empty \\boxed{}")


def _final_part(text: str) -> str:
    """The text after the last `</think>` (the reasoning may try answers out), else all of it."""
    close = text.lower().rfind("</think>")
    return text if close < 0 else text[close + len("</think>"):]


def all_boxed(text: str) -> list[str]:
    """The content of every balanced `\\boxed{...}`, in order. One pass pairs every brace first (a stack), so
    many nested or unclosed boxes stay linear, where calling `balanced_end` per box would be quadratic."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if len(starts) < 2:
        return [text[s: e - 1] for s in starts if (e := balanced_end(text, s) or 0)]
    closes: dict[int, int] = {}  # index after a `{` -> index of its `}`
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i + 1)
        elif ch == "}" and stack:
            closes[stack.pop()] = i
    return [text[s: closes[s]] for s in starts if s in closes]


@parser("boxed")
def boxed(text: str, sample: Sample, several: str = "refuse") -> Answer:
    """Content of the last `\\boxed{...}`; unbalanced or empty -> None. Several boxes after the reasoning
    that read differently are a hedge (None), unless `several: last`."""
    content, note = boxed_content(text)
    if content is None:
        return _fail("boxed", note)
    if _several(several) == "refuse":
        problem = hedge(all_boxed(_final_part(text)))
        if problem:
            return _fail("boxed", problem)
    return _ok("boxed", content)


def _several(value: str) -> str:
    if value not in ("refuse", "last"):
        raise ConfigError(f"several must be 'refuse' (a hedge is unparsed) or 'last', got {value!r}")
    return value


# --- tags ------------------------------------------------------------------------------------


def all_answer_tags(text: str) -> list[str]:
    """The content of every closed `<answer>...</answer>`, in order."""
    low, out, pos = text.lower(), [], 0
    while (start := low.find("<answer>", pos)) >= 0:
        end = low.find("</answer>", start)
        if end < 0:
            break
        out.append(text[start + len("<answer>"): end])
        pos = end + len("</answer>")
    return out


@parser("answer_tag")
def answer_tag(text: str, sample: Sample, several: str = "refuse") -> Answer:
    """Content of the last `<answer>...</answer>`; a missing `</answer>` means "to the end". Several blocks
    after the reasoning that read differently are a hedge (None), unless `several: last` (the peers' rule)."""
    if _several(several) == "refuse":
        problem = hedge(all_answer_tags(_final_part(text)))
        if problem:
            return _fail("answer_tag", problem)
    low = text.lower()
    start = low.rfind("<answer>")
    if start < 0:
        return _fail("answer_tag", "no <answer> tag")
    start += len("<answer>")
    end = low.find("</answer>", start)
    content = text[start:end] if end >= 0 else strip_end_markers(text[start:])
    content = content.strip()
    if not content:
        return _fail("answer_tag", "empty <answer>")
    return _ok("answer_tag", content, "" if end >= 0 else "missing </answer>")


def think_text(text: str, allow_unclosed: bool = False) -> str | None:
    """Text of the first `<think>...</think>` block.

    With no `<think>` before the first `</think>`, the text from the start counts (chat templates
    that put `<think>` in the prompt). An unclosed `<think>` gives None, or with `allow_unclosed`
    the text to the end. No `</think>` and no `<think>` -> None."""
    low = text.lower()
    close = low.find("</think>")
    open_ = low.find("<think>")
    if close < 0:
        if open_ < 0 or not allow_unclosed:
            return None
        return strip_end_markers(text[open_ + len("<think>"):]).strip()
    start = open_ + len("<think>") if 0 <= open_ < close else 0
    return text[start:close].strip()


@parser("think")
def think(text: str, sample: Sample) -> Answer:
    """The text inside `<think>...</think>`; None if absent, unclosed or empty."""
    content = think_text(text)
    if content is None:
        return _fail("think", "no closed <think> block")
    return _ok("think", content) if content else _fail("think", "empty <think> block")


@parser("after_think")
def after_think(text: str, sample: Sample) -> Answer:
    """The text after the last `</think>` (end markers stripped); None if no `</think>` or empty."""
    pos = text.lower().rfind("</think>")
    if pos < 0:
        return _fail("after_think", "no </think>")
    rest = strip_end_markers(text[pos + len("</think>"):])
    return _ok("after_think", rest) if rest else _fail("after_think", "nothing after </think>")


@parser("first_of")
def first_of(text: str, sample: Sample, parsers: Sequence[Any] = ()) -> Answer:
    """Try each parser step in `parsers` in order; the first parsed value wins."""
    if not parsers:
        raise ConfigError("first_of needs `parsers: [...]`")
    notes = []
    for step in parsers:
        name, args = split_spec(step)
        answer = PARSERS.get(name)(text, sample, **args)
        if answer.value is not None:
            return _ok("first_of", answer.value, f"{name}")
        notes.append(f"{name}: {answer.note}")
    return _fail("first_of", "; ".join(notes))


# --- yes/no, integer -------------------------------------------------------------------------


@parser("yes_no")
def yes_no(text: str, sample: Sample) -> Answer:
    """Strict yes/no via `yes_no_of` (whole tokens; a hedge with both, or a negated one, is None)."""
    text = json_answer(text)
    value = yes_no_of(text)
    if value is not None:
        return _ok("yes_no", value)
    words = harness(text).split()
    if any(negated(words, i) for i, w in enumerate(words) if w in ("yes", "no")):
        return _fail("yes_no", "a negated yes or no (hedge)")
    return _fail("yes_no", "both yes and no (hedge)" if {"yes", "no"} <= set(words) else "neither yes nor no")


# A number, with its minus sign where one stands before it on its own ("-1", "grade -2"; in "2-3" the dash
# joins two numbers); digits glued to letters or dots are not numbers.
_NUMBER = re.compile(r"(?:(?<![\w.\-\u2212])[-\u2212])?(?<![\w.])\d+(?:\.\d+)?(?![\w])")


@parser("integer")
def integer(text: str, sample: Sample) -> Answer:
    """The single integer in the text ("2", "Grade 3", "grade 2 (2)", "-1"); none, a decimal, several or a
    negated one ("not 2") -> None.

    Digits glued to letters ("T2", "3rd") are not numbers; a minus sign is the number's own ("-1" is -1),
    except between two numbers ("grade 2-3" is two)."""
    values = set()
    text = json_answer(text)
    for match in _NUMBER.finditer(text):
        number = match.group().replace("\u2212", "-")
        if len(number) > 50:
            return _fail("integer", "number too long")
        if "." in number and number.split(".")[1].strip("0"):
            return _fail("integer", f"non-integer number {number}")
        start = max(0, match.start() - 40)  # the words just before it (a cut first word is dropped)
        before = tokens(text[start:match.start()], "harness")[1 if start else 0:]
        if negated([*before, number], len(before)):
            return _fail("integer", f"negated number ({text[:match.end()][-40:].strip()!r})")
        values.add(int(number.split(".")[0]))
        if len(values) > 1:
            return _fail("integer", "several different integers")
    if not values:
        return _fail("integer", "no integer")
    return _ok("integer", values.pop())
