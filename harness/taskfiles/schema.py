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

    licence: str = Field(description="the dataset's licence (e.g. CC0-1.0)")
    citation: str = Field(description="how to cite the dataset")
    modality: str = Field("", description="e.g. radiology")
    homepage: str = Field("", description="the dataset's home page")
    sizes: dict[str, int] = Field(
        default_factory=dict,
        description="expected split sizes (after filters), e.g. {test: 451}; the loader reports expected vs "
                    "actual in run.json, and a full split of another size is an error (`check_sizes`)")
    prior: dict[str, str] = Field(
        default_factory=dict,
        description="answer_type -> the train split's majority answer, for baselines when no train split is "
                    "reachable (else: an oracle floor, docs/design.md)")
    pitfalls: list[str] = Field(default_factory=list,
                                description="what trips people up; shown to readers of the card")
    scoring_notes: str = Field("", description="how the task is scored, for readers of the card")


class PromptSpec(Strict):
    """One prompt variant. `{question}`, `{choices}`, `{classes}`, `{knowledge}` and meta fields are filled
    in."""

    user: str = Field(description="the user message: a template with `{question}`, `{choices}` (lettered "
                                  "options, one per line), `{classes}` (the options joined by commas), "
                                  "`{knowledge}` and any scalar `meta` field; `{{` / `}}` are literal braces")
    system: str | None = Field(None, description="the system message (a template as `user`); null: none")
    knowledge: str | None = Field(
        None, description="a text file beside the task file: one \"class: visual attributes\" line each, "
                          "filled in as `{knowledge}` (docs/knowledge.md)")
    parser: list[str | dict[str, Any]] | None = Field(
        None, description="overrides `scoring.parser` for this variant (its format's extraction)")
    images: str = Field("before", description="where the image parts go: before or after the text")
    metrics: list[str | dict[str, Any]] = Field(
        default_factory=list, description="extra metrics only this format allows (e.g. format compliance)")
    generation: dict[str, Any] = Field(
        default_factory=dict,
        description="generation settings of this variant over the task's (e.g. a longer max_new_tokens for "
                    "reasoning)")

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
    default: str = Field(description="the variant used unless `-T TASK.prompt=NAME` names another")
    variants: dict[str, PromptSpec] = Field(description="the prompt variants by name")

    @model_validator(mode="after")
    def _default_exists(self) -> Prompts:
        if self.default not in self.variants:
            raise ValueError(f"default prompt '{self.default}' is not among {sorted(self.variants)}")
        return self


class Scoring(Strict):
    convention: str = Field(
        "harness", description="the declared default convention's name; `score --convention NAME` applies a "
                               "peer convention")
    parser: list[str | dict[str, Any]] = Field(
        default_factory=lambda: list[str | dict[str, Any]](["short_answer"]),
        description="chain of registered parsers (`medharness ls parsers`)")
    metrics: list[str | dict[str, Any]] | None = Field(
        None, min_length=1,
        description="null: the convention's metrics; else a list (`medharness ls metrics`), each a name or "
                    "{name, args, as} (`as` sets the column label)")


class TaskConfig(Strict):
    name: SafeName = Field(description="the task's name (= the file stem); its rows are written to "
                                       "`samples/<name>.jsonl`")
    version: str = Field(description="bump when prompt, parser or metrics change; every row records it")
    description: str = Field(description="what the task is, in a sentence or two")
    family: str | None = Field(None, description="`--tasks FAMILY` selects every task of the family")
    card: Card = Field(description="what a user needs to trust the numbers (`Card`)")
    sources: list[SourceSpec] = Field(
        min_length=1, description="where the data comes from, tried in order: local ones with --data-dir, "
                                  "else the first remote one")
    columns: Columns = Field(Columns(), description="dataset column -> Sample field (`Columns`)")
    filter: dict[str, Any] = Field(default_factory=dict, description="equality filters on raw rows")
    split: str = Field("test", description="the split evaluated")
    prompts: Prompts = Field(description="the prompt variants and the default one (`Prompts`)")
    scoring: Scoring = Field(Scoring(), description="convention, parser chain and metrics (`Scoring`)")
    group_by: list[str] = Field(
        default_factory=list,
        description="meta fields whose values split the summary into groups (e.g. answer_type: CLOSED / "
                    "OPEN)")
    cluster_by: str = Field(
        default="image", min_length=1,
        description="what the bootstrap resamples (docs/statistics.md): image (the first image reference), "
                    "item, or a `meta` field naming a shared unit (e.g. a patient id)")
    generation: dict[str, Any] = Field(
        default_factory=dict, description="generation settings (`GenerationSettings`), e.g. "
                                          "{max_new_tokens: 64}")
    check_sizes: bool = Field(
        True,
        description="a full split whose size differs from `card.sizes` is an error")
    data_dir: str | None = Field(None, description="the local data folder; set by --data-dir or "
                                                   "-T TASK.data_dir=DIR")
    prompt: str | None = Field(
        None,
        description="the prompt variant to use (null: `prompts.default`); set by -T TASK.prompt=NAME")

    _generation = field_validator("generation")(classmethod(lambda cls, v: check_generation(v)))
