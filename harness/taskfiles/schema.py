"""The task file schema: a strict model of one benchmark's YAML, with the checks of single fields (prompt
templates, generation settings). Checks that need the whole file are in `checks.py`; loading is `task.py`."""

from __future__ import annotations

import string
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from medharness.core.records import GenerationSettings, SafeName, Strict
from medharness.taskfiles.sources import Columns, SourceSpec


def template_fields(template: str) -> set[str]:
    """The placeholders of a prompt template; ValueError for a malformed one. A placeholder is a plain name
    (`{question}`): no format spec, conversion, attribute or index, since the values are text or numbers that
    a spec like `{question:d}` would fail on at run time. `{{` and `}}` are literal braces."""
    names = set()
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # "{question" or a lone "}"
        raise ValueError(f"malformed template ({exc}); write literal braces as {{{{ and }}}}") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {shown} is not a plain name like {{question}}; write literal "
                             "braces as {{ and }}")
        names.add(name)
    return names


def check_generation(values: dict[str, Any]) -> dict[str, Any]:
    """`generation:` keys are GenerationSettings fields with valid values (built here as `run` builds
    them)."""
    try:
        GenerationSettings(**values)
    except ValidationError as exc:
        errors = [f"{'.'.join(map(str, e['loc'])) or 'generation'}: {e['msg']}".replace(
            "Extra inputs are not permitted",
            f"unknown key (keys: {', '.join(GenerationSettings.model_fields)})")
                  for e in exc.errors()]
        raise ValueError("; ".join(errors)) from None
    return values


# what every prompt can use, besides the source's meta fields
BUILTIN_FIELDS = ("question", "choices", "classes")


class Card(Strict):
    """What a user needs to trust the numbers: provenance, licence, sizes, scoring, pitfalls."""

    licence: str
    citation: str
    modality: str = ""
    homepage: str = ""
    sizes: dict[str, int] = Field(default_factory=dict)  # expected split sizes (after filters)
    prior: dict[str, str] = Field(default_factory=dict)  # answer_type -> majority answer, for baselines
    pitfalls: list[str] = Field(default_factory=list)
    scoring_notes: str = ""


class PromptSpec(Strict):
    """One prompt variant. `{question}`, `{choices}`, `{classes}`, `{knowledge}` and meta fields are filled
    in."""

    user: str
    system: str | None = None
    knowledge: str | None = None  # a text file beside the task file: one "class: visual attributes" line each
    parser: list[str | dict[str, Any]] | None = None  # overrides scoring.parser for this variant
    images: str = "before"  # where the image parts go: before | after the text
    metrics: list[str | dict[str, Any]] = Field(default_factory=list)  # extra metrics this format allows
    generation: dict[str, Any] = Field(default_factory=dict)  # e.g. a longer max_new_tokens for reasoning

    @model_validator(mode="after")
    def _check(self) -> PromptSpec:
        if self.images not in ("before", "after"):
            raise ValueError("images must be 'before' or 'after'")
        return self

    @field_validator("user", "system")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value

    _generation = field_validator("generation")(classmethod(lambda cls, v: check_generation(v)))


class Prompts(Strict):
    default: str
    variants: dict[str, PromptSpec]

    @model_validator(mode="after")
    def _default_exists(self) -> Prompts:
        if self.default not in self.variants:
            raise ValueError(f"default prompt '{self.default}' is not among {sorted(self.variants)}")
        return self


class Scoring(Strict):
    convention: str = "harness"  # the declared default convention's name
    parser: list[str | dict[str, Any]] = Field(
        default_factory=lambda: list[str | dict[str, Any]](["short_answer"]))
    metrics: list[str | dict[str, Any]] | None = Field(None, min_length=1)  # None: the named convention's


class TaskConfig(Strict):
    name: SafeName  # the samples file is samples/<name>.jsonl
    version: str
    description: str
    family: str | None = None
    card: Card
    sources: list[SourceSpec] = Field(min_length=1)
    columns: Columns = Columns()
    filter: dict[str, Any] = Field(default_factory=dict)
    split: str = "test"
    prompts: Prompts
    scoring: Scoring = Scoring()
    group_by: list[str] = Field(default_factory=list)
    # what the bootstrap resamples (docs/statistics.md): "image" (the first image reference; the default),
    # "item", or a `meta` field naming a shared unit (e.g. a patient id)
    cluster_by: str = Field(default="image", min_length=1)
    generation: dict[str, Any] = Field(default_factory=dict)
    check_sizes: bool = True  # a full split whose size differs from card.sizes is an error
    data_dir: str | None = None  # set by --data-dir or -T task.data_dir=DIR
    prompt: str | None = None  # set by -T task.prompt=NAME

    _generation = field_validator("generation")(classmethod(lambda cls, v: check_generation(v)))
