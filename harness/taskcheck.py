"""Checks of a task file that `validate` and `run` share (through `task.parse_task_file`): each builds what `run`
builds from the file, so a file `validate` passes is one `run` accepts, data aside (docs/safety.md)."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from medharness.errors import ConfigError
from medharness.metrics import resolve_metrics
from medharness.parsers import ParserChain
from medharness.records import GenerationSettings

if TYPE_CHECKING:
    from medharness.task import TaskConfig

Problems = list[tuple[tuple[Any, ...], str]]  # (location in the file, message)


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
            raise ValueError(f"placeholder {shown} is not a plain name like {{question}}; write literal braces "
                             "as {{ and }}")
        names.add(name)
    return names


def check_generation(values: dict[str, Any]) -> dict[str, Any]:
    """`generation:` keys are GenerationSettings fields with valid values (built here as `run` builds them)."""
    try:
        GenerationSettings(**values)
    except ValidationError as exc:
        errors = [f"{'.'.join(map(str, e['loc'])) or 'generation'}: {e['msg']}".replace(
            "Extra inputs are not permitted", f"unknown key (keys: {', '.join(GenerationSettings.model_fields)})")
                  for e in exc.errors()]
        raise ValueError("; ".join(errors)) from None
    return values


BUILTIN_FIELDS = ("question", "choices", "classes")  # what every prompt can use, besides the source's meta fields


def _check_scoring(config: TaskConfig) -> Problems:
    """The parser chains and metrics the file names, built as `run` builds them (unknown names, unknown or
    ill-typed arguments)."""
    built: list[tuple[tuple[Any, ...], Any]] = [(("scoring", "parser"), lambda: ParserChain(config.scoring.parser))]
    if config.scoring.metrics is not None:
        built.append((("scoring", "metrics"), lambda: resolve_metrics(config.scoring.metrics or [])))
    for name, spec in config.prompts.variants.items():
        where = ("prompts", "variants", name)
        if spec.parser is not None:
            built.append(((*where, "parser"), lambda spec=spec: ParserChain(spec.parser or [])))
        built.append(((*where, "metrics"), lambda spec=spec: resolve_metrics(spec.metrics)))
    errors = []
    for loc, build in built:
        try:
            build()
        except ConfigError as exc:
            errors.append((loc, str(exc)))
    return errors


def check_fields(config: TaskConfig) -> Problems:
    """What only the whole file can tell: a `group_by` field that no source provides, or a prompt placeholder
    that some source does not provide (a prompt must render whichever copy of the data is used; a group a copy
    lacks is only absent from that copy's table). Sources say what they provide in `meta_fields`. Returns
    (location, message) pairs."""
    errors = _check_scoring(config)
    provided = {f"source {n + 1} ({s.kind})": s.meta_fields(config.columns) for n, s in enumerate(config.sources)}
    anywhere = set().union(*provided.values())
    for i, field in enumerate(config.group_by):
        if field not in anywhere:
            message = (f"group_by field '{field}' is a meta field of no source; they provide: "
                       f"{', '.join(sorted(anywhere)) or 'none'}")
            errors.append((("group_by", i), message))
    for variant, spec in config.prompts.variants.items():
        for key in ("user", "system"):
            template = getattr(spec, key)
            for what, fields in provided.items():
                allowed = {*BUILTIN_FIELDS, *fields, *(["knowledge"] if spec.knowledge else [])}
                unknown = sorted(template_fields(template) - allowed) if template else []
                if unknown:
                    message = (f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)} for {what}; "
                               f"available: {', '.join(sorted(allowed))}")
                    errors.append((("prompts", "variants", variant, key), message))
                    break
    return errors
