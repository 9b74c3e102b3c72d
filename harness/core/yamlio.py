"""YAML loading that remembers where each key was written, for errors that name file, line and key.

Every YAML file medharness reads (task files, judge panels, recipe configs and presets, sweep files) and every
YAML value given on the command line goes through here. Anchors and aliases (`&name`, `*name`, `<<: *name`)
are refused where they are written: the loader builds a tree (not a graph) and a 500-byte file of nested
aliases would otherwise expand to billions of nodes (an "alias bomb", see docs/safety.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from medharness.core.datafiles import read_text
from medharness.core.errors import ConfigError

Loc = tuple[str | int, ...]


MAX_DEPTH = 64  # lists/mappings inside each other; real files use under 10
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Loader(yaml.SafeLoader):
    """SafeLoader (no tags, no code) that refuses anchors and aliases (and, in `_construct`, duplicate
    keys)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise _Refused(f"line {event.start_mark.line + 1}: YAML anchors and aliases ({sign}{anchor}) are "
                                "not allowed; write the value out in full")
        if self.depth >= MAX_DEPTH:
            raise _Refused(f"line {event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Refused(ConfigError):
    """An anchor, an alias or too deep a nesting met while composing (before any node is built)."""


def _construct(loader: _Loader, node: yaml.Node, path: Loc, lines: dict[Loc, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise ConfigError(f"line {node.start_mark.line + 1}: YAML tag {node.tag} is not allowed (no code in "
                          "task files)")
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"line {key_node.start_mark.line + 1}: a key must be a plain value, not a "
                                  f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}")
            key = loader.construct_object(key_node)
            if key in out:
                raise ConfigError(f"duplicate key '{key}' (line {key_node.start_mark.line + 1})")
            out[key] = _construct(loader, value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, v, (*path, i), lines) for i, v in enumerate(node.value)]
    return loader.construct_object(node)


def load_yaml_with_lines(path: Path, what: str = "YAML file") -> tuple[Any, dict[Loc, int]]:
    """Parse one YAML document; return the data and a map from key path to line number.

    Whatever is wrong with the file (unreadable, not UTF-8, not YAML, an anchor, nesting deeper than
    MAX_DEPTH, a number too long to convert, ...) is a ConfigError naming the file: never a traceback."""
    text = read_text(path, what, ConfigError)
    lines: dict[Loc, int] = {}
    data = _load(text, str(path), lines, in_file=True)
    if data is _EMPTY:
        raise ConfigError(f"{path}: the file is empty")
    return data, lines


_EMPTY = object()


def _load(text: str, where: str, lines: dict[Loc, int], in_file: bool) -> Any:
    """The one parse path of files and command-line values: every failure is a ConfigError naming `where`
    (and, in a file, the line: `task.yaml:2: ...`)."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return _EMPTY
        return _construct(loader, node, (), lines)
    except _Refused as exc:
        line, _, message = str(exc).partition(": ")
        raise ConfigError(f"{where}:{line.removeprefix('line ')}: {message}" if in_file
                          else f"{where}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read") from None
    except Exception as exc:  # noqa: BLE001 - e.g. an integer of 5000 digits: an error naming the input
        raise ConfigError(f"{where}: cannot be read as YAML: {type(exc).__name__}: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_value(text: str, what: str) -> Any:
    """One YAML value from the command line (`-T key=VALUE`, `--backend-option key=VALUE`): scalars, lists and
    mappings as YAML reads them; anchors, aliases and tags are refused like in files."""
    data = _load(text, what, {}, in_file=False)
    return None if data is _EMPTY else data


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the deepest key of `loc` found in the file (skipping parts the file does not
    have, such as pydantic's union tags)."""
    path: Loc = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
    return lines.get(path)


_UNION_TAG = re.compile(r"[a-z-]+\[.*\]|str|int|float|bool")  # pydantic's names of a union's branches
_WRONG_BRANCH = ("list_type", "dict_type")


def _untagged(loc: tuple[Any, ...], lines: dict[Loc, int]) -> tuple[Any, ...]:
    """`loc` without the union branch names pydantic puts in it (a part that names a type and is not a key of
    the file at that place)."""
    kept: tuple[Any, ...] = ()
    for part in loc:
        if isinstance(part, str) and _UNION_TAG.fullmatch(part) and (*kept, part) not in lines:
            continue
        kept = (*kept, part)
    return kept


def validation_report(what: str, path: Path, exc: ValidationError, lines: dict[Loc, int]) -> str:
    """`invalid WHAT` and one line per error, `FILE:LINE: key.path: message` (`unknown key 'key.path'`), for
    every strict file read with `load_yaml_with_lines`. A value that fits no branch of a union is one line
    (`Input should be a valid string or a valid dictionary`); a branch of another shape than the value (a list
    given where a mapping could be) is left out when another branch says what is wrong inside the value; and
    pydantic's branch names are left out of the key path."""
    errors = [(_untagged(tuple(e["loc"]), lines), len(e["loc"]) != len(_untagged(tuple(e["loc"]), lines)), e)
              for e in exc.errors()]
    deeper = [loc for loc, branched, _ in errors if branched]
    merged: dict[tuple[Any, ...], list[str]] = {}
    for loc, branched, err in errors:
        if branched and err["type"] in _WRONG_BRANCH and any(d[:len(loc)] == loc and len(d) > len(loc)
                                                              for d in deeper):
            continue  # the value is of another branch's shape: that branch's errors say what is wrong
        if err["type"] == "extra_forbidden":
            merged.setdefault(loc, []).append("")  # "" marks an unknown key
            continue
        message = err["msg"].removeprefix("Value error, ")
        if branched and merged.get(loc):
            message = message.removeprefix("Input should be ")
        merged.setdefault(loc, []).append(message)
    msgs = []
    for loc, messages in merged.items():
        where = ".".join(str(p) for p in loc) or "(top level)"
        at = line_of(lines, loc) or "?"
        if messages == [""]:
            msgs.append(f"{path}:{at}: unknown key '{where}'")
        else:
            msgs.append(f"{path}:{at}: {where}: {' or '.join(m for m in messages if m)}")
    return f"invalid {what}\n  " + "\n  ".join(msgs)


StrictModel = TypeVar("StrictModel", bound=BaseModel)


def validate_strict(model: type[StrictModel], data: Any, what: str, path: Path,
                    lines: dict[Loc, int]) -> StrictModel:
    """`data` read from `path` as `model`; a ValidationError becomes `validation_report`'s ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_report(what, path, exc, lines)) from None


def read_mapping(path: Path, what: str) -> tuple[dict[str, Any], dict[Loc, int]]:
    """A YAML file whose top level is a mapping, with each key's line (`what` names the file in errors)."""
    data, lines = load_yaml_with_lines(path, what)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} is a mapping of keys, got {type(data).__name__}")
    return data, lines


def load_strict(model: type[StrictModel], path: Path, what: str) -> tuple[StrictModel, dict[Loc, int]]:
    """The one way a strict YAML file (task, sweep, board, reference) is read: a mapping at the top, validated
    as `model`, every error `FILE:LINE: key.path: message`; returns the model and the lines of its keys."""
    data, lines = read_mapping(path, what)
    return validate_strict(model, data, what, path, lines), lines
