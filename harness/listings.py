"""What `medharness ls` lists: every registry and every shipped catalogue, read from the registries and the
shipped folders (so a listing cannot go stale). Each lister imports what it reads when it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate


def _list_tasks() -> tuple[list[str], list[list[Any]]]:
    from medharness.taskfiles.task import discover_tasks, parse_task_file

    rows = []
    for name, path in discover_tasks().items():
        c = parse_task_file(path)
        rows.append([name, c.family or "", c.card.modality, c.card.sizes.get(c.split, ""), c.card.licence,
                     c.scoring.convention, ",".join(c.prompts.variants)])
    return ["task", "family", "modality", "size", "licence", "convention", "prompts"], rows


def _list_metrics() -> tuple[list[str], list[list[Any]]]:
    from medharness.scoring.metrics import METRICS

    return ["metric", "better", "aggregation", "description"], [
        [n, "higher" if m.higher_is_better else "lower", "corpus" if m.corpus else "mean", m.description]
        for n, m in METRICS.items()]


def _list_conventions() -> tuple[list[str], list[list[Any]]]:
    from medharness.scoring.conventions import CONVENTIONS

    return ["convention", "version", "rule"], [[n, c.version, c.description.split(". ")[0]]
                                                for n, c in CONVENTIONS.items()]


def _list_judges() -> tuple[list[str], list[list[Any]]]:
    from medharness.judges.specs import JUDGES, get_spec

    rows = []
    for name in JUDGES.names():
        spec = get_spec(name)
        levels = f"{spec.levels[0]:g}..{spec.levels[-1]:g}" if spec.scale == "ordinal" else "0/1"
        rows.append([name, spec.scale, ", ".join(spec.fields), levels, spec.prompt_hash])
    return ["judge spec", "scale", "verdict fields", "values", "prompt hash"], rows


def _list_names(registry: Any) -> tuple[list[str], list[list[Any]]]:
    return ["name"], [[name] for name in registry.names()]


def _list_parsers() -> tuple[list[str], list[list[Any]]]:
    from medharness.scoring.parsers import PARSERS

    return _list_names(PARSERS)


def _list_normalizers() -> tuple[list[str], list[list[Any]]]:
    from medharness.scoring.normalize import NORMALIZERS

    return _list_names(NORMALIZERS)


def _list_backends() -> tuple[list[str], list[list[Any]]]:
    from medharness.backends import BACKENDS

    return _list_names(BACKENDS)


def _list_recipes() -> tuple[list[str], list[list[Any]]]:
    from medharness.trainers.recipes.base import TRAINERS

    return ["recipe", "TRL config", "data", "rewards", "starts from preset", "description"], [
        [n, c.trl_config, c.data_format, "yes" if c.uses_rewards else "no", c.own_preset or n, c.description]
        for n, c in TRAINERS.items()]


def _first_comment(path: Path) -> str:
    """The first comment line of a shipped YAML file: what it is."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def _list_presets() -> tuple[list[str], list[list[Any]]]:
    from medharness.trainers.config import preset_names, preset_path, read_layer

    rows = []
    for name in preset_names():
        data, _ = read_layer(preset_path(name))
        rows.append([name, data.get("recipe") or "(overlay: any recipe)", _first_comment(preset_path(name))])
    return ["preset", "recipe", "description"], rows


def _list_sweeps() -> tuple[list[str], list[list[Any]]]:
    from medharness.trainers.sweeps import DEMO
    from medharness.trainers.sweeps.schema import expand, load_sweep

    rows = []
    for path in sorted(DEMO.parent.glob("*.yaml")):
        cells = expand(load_sweep(path))
        rows.append([path.stem, len(cells), ", ".join(sorted({c.entry.recipe for c in cells})),
                     _first_comment(path)])
    return ["sweep (--sweep trainers/sweeps/NAME.yaml)", "cells", "recipes", "description"], rows


def _list_boards() -> tuple[list[str], list[list[Any]]]:
    from medharness.leaderboards.spec import BOARDS, load_board

    rows = []
    for path in sorted(BOARDS.glob("*.yaml")):
        spec = load_board(path)
        rows.append([spec.name, len(spec.rows), spec.title or ""])
    return ["board (leaderboard --board NAME)", "rows", "title"], rows


# One lister per name: (headers, rows). `ls`'s choices are these names.
LISTERS: dict[str, Callable[[], tuple[list[str], list[list[Any]]]]] = {
    "tasks": _list_tasks, "parsers": _list_parsers, "metrics": _list_metrics,
    "normalizers": _list_normalizers, "conventions": _list_conventions, "backends": _list_backends,
    "judges": _list_judges,
    "recipes": _list_recipes, "presets": _list_presets, "sweeps": _list_sweeps, "boards": _list_boards}


def print_listing(what: str) -> None:
    headers, rows = LISTERS[what]()
    if headers == ["name"]:
        print("\n".join(row[0] for row in rows))
    else:
        print(tabulate(rows, headers=headers, tablefmt="github"))


