"""YAML loading that remembers where each key was written, for errors that name file, line and key.

Every YAML file medharness reads (task files, judge panels, recipe configs and presets, sweep files) and every
YAML value given on the command line goes through here. Anchors and aliases (`&name`, `*name`, `<<: *name`) are
refused where they are written: the loader builds a tree (not a graph) and a 500-byte file of nested aliases
would otherwise expand to billions of nodes (an "alias bomb", see docs/safety.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from medharness.errors import ConfigError

Loc = tuple[str | int, ...]


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Loader(yaml.SafeLoader):
    """SafeLoader (no tags, no code) that refuses anchors and aliases (and, in `_construct`, duplicate keys)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise _AliasRefused(f"line {event.start_mark.line + 1}: YAML anchors and aliases ({sign}{anchor}) are "
                                "not allowed; write the value out in full")
        return super().compose_node(parent, index)


class _AliasRefused(ConfigError):
    """An anchor or alias met while composing (before any node is built)."""


def _construct(loader: _Loader, node: yaml.Node, path: Loc, lines: dict[Loc, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise ConfigError(f"line {node.start_mark.line + 1}: YAML tag {node.tag} is not allowed (no code in task files)")
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if key in out:
                raise ConfigError(f"duplicate key '{key}' (line {key_node.start_mark.line + 1})")
            out[key] = _construct(loader, value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, v, (*path, i), lines) for i, v in enumerate(node.value)]
    return loader.construct_object(node)


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse one YAML document; return the data and a map from key path to line number."""
    text = path.read_text(encoding="utf-8")
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except _AliasRefused as exc:
            where, _, message = str(exc).partition(": ")
            raise ConfigError(f"{path}:{where.removeprefix('line ')}: {message}") from None
        if node is None:
            raise ConfigError(f"{path}: the file is empty")
        lines: dict[Loc, int] = {}
        try:
            return _construct(loader, node, (), lines), lines
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_value(text: str, what: str) -> Any:
    """One YAML value from the command line (`-T key=VALUE`, `--backend-option key=VALUE`): scalars, lists and
    mappings as YAML reads them; anchors, aliases and tags are refused like in files."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _construct(loader, node, (), {})
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: not a valid YAML value: {exc}") from None
    finally:
        loader.dispose()


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the deepest key of `loc` found in the file (skipping parts the file does not
    have, such as pydantic's union tags)."""
    path: Loc = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
    return lines.get(path)
