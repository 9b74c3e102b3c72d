"""Judge specs: a versioned prompt file, a closed set of verdicts and a strict verdict parser.

Prompt files are versioned: NEVER edit the meaning of a shipped `prompts/<name>.txt`; add
`<stem>_v2.txt` and a new spec instead (`prompt_hash` records which text judged a run).
A prompt file is a `[system]` then a `[user]` section with `string.Template` placeholders
`$question`, `$gold`, `$prediction`, the data between delimiter tags it cannot close.
`parse` reads only the judge's reply and accepts EXACTLY ONE JSON object with exactly the declared
keys and values in the closed set; anything else is `failed` with a note. See docs/judges.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from hashlib import sha256
from pathlib import Path
from string import Template
from typing import Any, ClassVar, Literal

from medharness.core.errors import ConfigError
from medharness.core.records import Message, Part, ResultRow
from medharness.core.registry import Registry
from medharness.scoring.parsers import strip_end_markers
from medharness.scoring.parsers.structured import letter_of
from medharness.scoring.parsers.text import boxed_content, think_text

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PLACEHOLDERS = ("question", "gold", "prediction")
DELIMITERS = ("question", "gold_answer", "prediction", "reasoning")  # every tag a prompt may use
_TAG = re.compile(r"(?:<|&lt;)\s*/?\s*(?:" + "|".join(DELIMITERS) + r")\b(?:[^<>&]{0,200}(?:>|&gt;))?",
                  re.IGNORECASE)
_BRACE = re.compile(r"[{}]")


@dataclass(frozen=True)
class JudgeInput:
    question: str
    gold: str
    prediction: str  # the text under judgement (what exactly depends on the spec)


@dataclass(frozen=True)
class Verdict:
    values: dict[str, float]  # every verdict field -> number; {} when failed
    value: float | None  # the primary field's value; None = unscored
    failed: bool  # the reply was not exactly one well-formed verdict (judge_failed)
    rationale: str | None = None
    note: str = ""

    @classmethod
    def fail(cls, note: str) -> Verdict:
        return cls(values={}, value=None, failed=True, note=note)

    @classmethod
    def skip(cls, note: str) -> Verdict:
        """Nothing to judge (no judge call): unscored, but not a judge failure."""
        return cls(values={}, value=None, failed=False, note=note)


def neutralise(text: str) -> str:
    """The text with every delimiter tag (opening or closing, any variant) replaced by a marker."""
    return _TAG.sub("[tag removed]", text)


def gold_text(row: ResultRow) -> str:
    """The gold target as text: strings as is, "B. <option>" for an option, JSON for the rest."""
    sample = row.sample
    target = sample.target
    if sample.choices and isinstance(target, str):
        letter = letter_of(target, sample.choices)
        if letter:
            return f"{letter}. {sample.choices[ord(letter) - 65]}"
    if isinstance(target, str):
        return target.strip()
    return "" if target is None else json.dumps(target, ensure_ascii=False, sort_keys=True)


def question_text(row: ResultRow) -> str:
    """The question, with its lettered options when the sample has choices."""
    question = row.sample.question.strip()
    if row.sample.choices:
        options = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(row.sample.choices))
        question = f"{question}\nOptions:\n{options}"
    return question


def final_answer(reply: str) -> str:
    """What follows the last `</think>` (or precedes an unclosed `<think>`); then the last
    `<answer>...</answer>` if any (unclosed: to the end), else the last `\\boxed{}` if any, else all of it."""
    low = reply.lower()
    if (close := low.rfind("</think>")) >= 0:
        reply = reply[close + len("</think>"):]
    elif (open_ := low.find("<think>")) >= 0:
        reply = reply[:open_]
    low = reply.lower()
    if (start := low.rfind("<answer>")) >= 0:
        end = low.find("</answer>", start)
        return strip_end_markers(reply[start + len("<answer>"): end if end >= 0 else len(reply)])
    boxed, _ = boxed_content(reply)
    return boxed if boxed is not None else strip_end_markers(reply)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_refuse_constant)


def one_object(reply: str) -> tuple[dict[str, Any] | None, str]:
    """The single JSON object in the judge's reply, or (None, why not)."""
    text = reply.strip()
    if text[:7].lower() == "<think>":
        close = text.lower().find("</think>")
        if close < 0:
            return None, "unclosed <think> in the judge's reply"
        text = text[close + len("</think>"):]
    objects, pos = [], 0
    while (brace := _BRACE.search(text, pos)) is not None:
        if brace.group() == "}":
            return None, f"stray '}}' outside a JSON object at char {brace.start()}"
        try:
            obj, pos = _DECODER.raw_decode(text, brace.start())
        except (ValueError, RecursionError) as exc:
            return None, f"malformed JSON: {exc}"
        before, after = text[: brace.start()].rstrip()[-1:], text[pos:].lstrip()[:1]
        if before == "[" or after == "]":
            return None, "the JSON object is inside a JSON array"
        objects.append(obj)
    if len(objects) != 1:
        return None, f"expected exactly one JSON object, found {len(objects)}"
    return objects[0], ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def in_levels(raw: Any, levels: tuple[float, ...]) -> float | None:
    """A JSON number equal to one of `levels` (1 or 1.0), else None; bools and strings are refused."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw not in levels:
        return None
    return float(raw)


class JudgeSpec:
    """Base of every judge spec. Subclasses set the class attributes and `prediction_text`."""

    name: ClassVar[str] = ""  # set by @judge
    version: ClassVar[str]
    primary: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]  # numeric verdict fields = their JSON keys
    scale: ClassVar[Literal["binary", "ordinal"]] = "binary"
    levels: ClassVar[tuple[float, ...]] = (0.0, 1.0)  # the closed set of every numeric field
    max_new_tokens: ClassVar[int]
    rationale_key: ClassVar[str | None] = None  # the one free-text JSON key, if any
    prediction_tag: ClassVar[str] = "prediction"  # "": a paper's template without delimiter tags
    needs_gold: ClassVar[bool] = True

    def __init__(self, prompt_path: str | Path | None = None) -> None:
        self.prompt_path = Path(prompt_path) if prompt_path else PROMPTS_DIR / f"{self.name}.txt"

    def __repr__(self) -> str:
        return f"<judge {self.name} {self.prompt_hash}>"

    @property
    def keys(self) -> tuple[str, ...]:
        """The exact JSON keys of a verdict."""
        return ((self.rationale_key,) if self.rationale_key else ()) + self.fields

    @cached_property
    def prompt_template(self) -> str:
        """The prompt file's text, read once per instance (so the hash is that of what renders)."""
        return self.prompt_path.read_text(encoding="utf-8")

    @property
    def prompt_hash(self) -> str:
        return sha256(self.prompt_template.encode("utf-8")).hexdigest()[:16]

    @cached_property
    def _sections(self) -> tuple[Template, Template]:
        text, where = self.prompt_template, f"judge prompt {self.prompt_path}"
        head, marker, user = text.partition("\n[user]\n")
        if not head.startswith("[system]\n") or not marker or "\n[user]\n" in user:
            raise ConfigError(f"{where}: needs '[system]' then one '[user]' line")
        system = head[len("[system]\n"):]
        for name in PLACEHOLDERS:
            if f"${name}" in system or user.count(f"${name}") > 1:
                raise ConfigError(f"{where}: ${name} may appear once, in the [user] section")
        if user.count("$prediction") != 1:
            raise ConfigError(f"{where}: needs $prediction exactly once")
        for tag in (f"<{self.prediction_tag}>", f"</{self.prediction_tag}>") if self.prediction_tag else ():
            if user.count(tag) != 1:
                raise ConfigError(f"{where}: needs {tag} exactly once")
        templates = Template(system), Template(user)
        try:
            for t in templates:
                t.substitute(question="", gold="", prediction="")
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{where}: bad placeholder ({exc}); use $question $gold $prediction $$") \
                from exc
        return templates

    # --- input ---------------------------------------------------------------------------------

    def prediction_text(self, reply: str) -> str | None:
        """The part of the model's reply this judge sees (default: all of it); None or "" = nothing."""
        return strip_end_markers(reply)

    def gold_for(self, row: ResultRow) -> str:
        """The ground truth this judge is shown (default: the gold answer as text)."""
        return gold_text(row)

    def judge_input(self, row: ResultRow) -> JudgeInput | None:
        """None when there is nothing to judge: a generation error, no text to judge, or no gold."""
        if row.generation.error:
            return None
        prediction = self.prediction_text(row.generation.text)
        gold = self.gold_for(row)
        if not prediction or (self.needs_gold and not gold):
            return None
        return JudgeInput(question=question_text(row), gold=gold, prediction=prediction)

    def render(self, item: JudgeInput) -> tuple[Message, ...]:
        data = {"question": item.question, "gold": item.gold, "prediction": item.prediction}
        data = {k: neutralise(v) for k, v in data.items()}
        system, user = (t.substitute(data).strip() for t in self._sections)
        turn = Message(role="user", content=(Part(type="text", text=user),))
        if not system:  # a completion-style template (a paper's, for a base LM): one turn
            return (turn,)
        return (Message(role="system", content=(Part(type="text", text=system),)), turn)

    # --- output --------------------------------------------------------------------------------

    def convert(self, key: str, raw: Any) -> float | None:
        """One verdict field's JSON value as a number in the closed set, else None."""
        return in_levels(raw, self.levels)

    def parse(self, reply: str) -> Verdict:
        obj, note = one_object(reply)
        if obj is None:
            return Verdict.fail(note)
        missing, extra = sorted(set(self.keys) - set(obj)), sorted(set(obj) - set(self.keys))
        if missing or extra:
            return Verdict.fail(f"wrong keys: missing {missing}, extra {extra}")
        rationale = None
        if self.rationale_key:
            rationale = obj[self.rationale_key]
            if not isinstance(rationale, str) or not rationale.strip():
                return Verdict.fail(f"{self.rationale_key}: expected a non-empty string: {_short(rationale)}")
            rationale = rationale.strip()
        values = {}
        for key in self.fields:
            value = self.convert(key, obj[key])
            if value is None:
                return Verdict.fail(f"{key}: {_short(obj[key])} is not in the closed set")
            values[key] = value
        return Verdict(values=values, value=values[self.primary], failed=False, rationale=rationale)


JUDGES: Registry[JudgeSpec] = Registry("judge")


def judge(name: str) -> Callable[[type[JudgeSpec]], type[JudgeSpec]]:
    """Class decorator: names the spec `name` (which must end in `_v<version>`) and registers an instance."""

    def register(cls: type[JudgeSpec]) -> type[JudgeSpec]:
        if not name.endswith(f"_v{cls.version}"):
            raise ConfigError(f"judge '{name}' must end in '_v{cls.version}' (its version)")
        cls.name = name
        JUDGES.register(name, cls())
        return cls

    return register


def get_spec(name: str) -> JudgeSpec:
    entry: Any = JUDGES.get(name)
    return entry() if isinstance(entry, type) else entry


# --- the shipped specs -------------------------------------------------------------------------

@judge("rarl_v1")
class RarlV1(JudgeSpec):
    """RARL's judge: one-sentence evaluation, reasoning and prediction 0/1, on the whole reply."""

    version = "1"
    primary = "prediction_score"
    fields = ("prediction_score", "reasoning_score")
    max_new_tokens = 256
    rationale_key = "evaluation"


@judge("rarl_v2")
class RarlV2(JudgeSpec):
    """RARL's judge as Appendix B prints it, word for word: reasoning and prediction 0/1 against the ground
    truth, which is the sample's annotated explanation with its short answer where it has one (Table 4: the
    ground truth is the explanation), else the gold answer."""

    version = "2"
    primary = "prediction_score"
    fields = ("prediction_score", "reasoning_score")
    max_new_tokens = 256
    rationale_key = "evaluation"

    def gold_for(self, row: ResultRow) -> str:
        answer = gold_text(row)
        reasoning = row.sample.meta.get("reasoning")
        if isinstance(reasoning, str) and reasoning.strip() and answer:
            return f"{reasoning.strip()}\nShort answer: {answer}"
        return answer


@judge("semantic_v1")
class SemanticV1(JudgeSpec):
    """Is the `<think>` reasoning medically coherent and accurate? Yes=1/No=0 (no gold shown)."""

    version = "1"
    primary = "coherent"
    fields = ("coherent",)
    max_new_tokens = 32
    prediction_tag = "reasoning"
    needs_gold = False

    def prediction_text(self, reply: str) -> str | None:
        return think_text(reply)  # the first closed think block; None if absent or unclosed

    def convert(self, key: str, raw: Any) -> float | None:
        word = raw.strip().lower() if isinstance(raw, str) else None
        return {"yes": 1.0, "no": 0.0}.get(word or "")


@judge("equivalence_v1")
class EquivalenceV1(JudgeSpec):
    """Is the final answer clinically equivalent to the gold answer? 0/1, for open answers."""

    version = "1"
    primary = "equivalent"
    fields = ("equivalent",)
    max_new_tokens = 128
    rationale_key = "rationale"

    def prediction_text(self, reply: str) -> str | None:
        return final_answer(reply) or None


@judge("quality_1to10_v1")
class Quality1to10V1(JudgeSpec):
    """How useful is the response's reasoning for reaching the gold answer? An integer 1-10."""

    version = "1"
    primary = "quality"
    fields = ("quality",)
    scale = "ordinal"
    levels = tuple(float(i) for i in range(1, 11))
    max_new_tokens = 128
    rationale_key = "rationale"


@judge("semantic_fig1_v1")
class SemanticFig1V1(JudgeSpec):
    """The GRPO study's semantic-alignment judgment, Figure 1's template word for word, for its reference LLMs
    (BioGPT, BioMistral: base LMs that complete text, so no JSON): the first closed `<think>` block is the
    "Given Statement"; a reply that begins with Yes = 1 / No = 0 (yes, YES, "Yes." too; not the start of a
    longer word such as "Nothing"), anything else unscored. The template has no delimiter tags (the paper's
    words); delimiter tags inside the reasoning are still neutralised."""

    version = "1"
    primary = "coherent"
    fields = ("coherent",)
    max_new_tokens = 3
    prediction_tag = ""
    needs_gold = False

    def prediction_text(self, reply: str) -> str | None:
        return think_text(reply)  # the first closed think block; None if absent or unclosed

    def parse(self, reply: str) -> Verdict:
        word = re.match(r"\s*(Yes|YES|yes|No|NO|no)(?![a-z])", reply)
        value = {"yes": 1.0, "no": 0.0}.get(word.group(1).lower()) if word else None
        if value is None:
            return Verdict.fail(f"the reply does not begin with Yes or No: {_short(reply)}")
        return Verdict(values={"coherent": value}, value=value, failed=False)
