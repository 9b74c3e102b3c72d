"""Checks of a task file that `validate` and `run` share (through `task.parse_task_file`): each builds what
`run` builds from the file, so a file `validate` passes is one `run` accepts, data aside (docs/safety.md)."""

from __future__ import annotations

from typing import Any

from medharness.core.errors import ConfigError
from medharness.scoring.metrics import resolve_metrics
from medharness.scoring.parsers import ParserChain
from medharness.taskfiles.schema import BUILTIN_FIELDS, TaskConfig, template_fields

Problems = list[tuple[tuple[Any, ...], str]]  # (location in the file, message)


def _check_scoring(config: TaskConfig) -> Problems:
    """The parser chains and metrics the file names, built as `run` builds them (unknown names, unknown or
    ill-typed arguments)."""
    built: list[tuple[tuple[Any, ...], Any]] = [(("scoring", "parser"),
                                                 lambda: ParserChain(config.scoring.parser))]
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
    provided = {f"source {n + 1} ({s.kind})": s.meta_fields(config.columns)
                for n, s in enumerate(config.sources)}
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
                    message = (f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)} for "
                               f"{what}; available: {', '.join(sorted(allowed))}")
                    errors.append((("prompts", "variants", variant, key), message))
                    break
    return errors
