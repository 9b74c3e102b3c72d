"""`train-then-eval --dry-run`: resolve and check every cell without training.

Checked: the base model (a folder with a config, a `tiny` spec, or a hub id: noted, not fetched), every train
and eval task (loads, the train split exists, each k-shot subset is non-empty), the files the sweep names,
the eval backend and baselines, the launch settings, and, where the `train` command is installed, its recipes,
presets and each cell's resolved config down to TRL's own checks (e.g. num_generations vs the batch size).
Problems are collected (not raised one by one) so that one dry run lists them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medharness.errors import MedHarnessError
from medharness.trainers.sweep import Cell, SweepConfig, all_eval_tasks
from medharness.trainers.sweep_exec import Stages


def _task(name: str, sweep: SweepConfig) -> Any:
    from medharness.task import load_task

    overrides = {k: v for k, v in (("data_dir", sweep.data_dir), ("prompt", sweep.prompt)) if v}
    return load_task(name, overrides)


def _check_model(sweep: SweepConfig, stages: Stages, problems: list[str], notes: list[str]) -> None:
    model = sweep.model
    if model == "tiny" or model.startswith("tiny:"):
        try:
            out = stages.base_model(build=False)
        except MedHarnessError as exc:
            problems.append(str(exc))
            return
        notes.append(f"base model: {model}, built offline into {out} on the first run")
        return
    source = Path(stages.relative(model))
    if source.exists():
        if not ((source / "config.json").is_file() or (source / "adapter_config.json").is_file()):
            problems.append(f"model: {source} is not a model folder (no config.json)")
        else:
            notes.append(f"base model: {source}")
    elif str(model).startswith(("/", ".", "~")):
        problems.append(f"model: {model} does not exist")
    else:
        from medharness.backends.vlm_common import hub_snapshot

        cached = hub_snapshot(model)
        notes.append(f"base model: hub id {model} ({'in the local cache' if cached else 'not in the local cache'})")


def _check_tasks(sweep: SweepConfig, problems: list[str], notes: list[str]) -> None:
    from medharness.splits import kshot

    seeds = [sweep.split_seed] if sweep.split_seed is not None else sweep.seeds
    for name in sweep.tasks:
        try:
            train = _task(name, sweep).load_samples("train")
        except MedHarnessError as exc:
            problems.append(f"train task {name}: {exc}")
            continue
        for k in sweep.shots:
            if k == "all":
                notes.append(f"train task {name}: {len(train)} training samples")
                continue
            sizes = sorted({len(kshot(train, int(k), seed)) for seed in seeds})
            if 0 in sizes or not train:
                problems.append(f"train task {name}: the {k}-shot subset is empty")
            notes.append(f"train task {name}: k={k} per class -> {'/'.join(map(str, sizes))} samples")
    for name in all_eval_tasks(sweep):
        try:
            n = len(_task(name, sweep).load_samples())
        except MedHarnessError as exc:
            problems.append(f"eval task {name}: {exc}")
            continue
        limit = sweep.eval.limit
        notes.append(f"eval task {name}: {min(n, limit) if limit else n} of {n} samples")


def _check_training(sweep: SweepConfig, stages: Stages, cells: list[Cell], problems: list[str],
                    notes: list[str]) -> None:
    from medharness.trainers.base import recipe_class  # the train command's own registries
    from medharness.trainers.config import preset_names

    presets = set(preset_names())
    before = len(problems)
    for recipe in sorted({c.entry.recipe for c in cells}):
        try:
            recipe_class(recipe)
        except MedHarnessError as exc:
            problems.append(f"recipe {recipe}: {exc}")
    wanted = {p for c in cells for p in c.presets} | set(sweep.common_presets)
    for preset in sorted(wanted - presets):
        problems.append(f"preset {preset}: unknown; available: {', '.join(sorted(presets))}")
    if len(problems) > before:
        return
    try:
        from medharness.trainers.config import trl_args
    except ImportError as exc:  # a light install: the TRL settings are checked when the cells train
        notes.append(f"TRL settings not checked ({exc})")
        return
    from medharness.trainers.run import TrainRequest, resolve

    checked: set[tuple[str, str | None, str]] = set()
    for cell in cells:  # each cell's config as its train command resolves it, down to TRL's own checks
        if (cell.entry.key, cell.preset, cell.task) in checked:
            continue
        checked.add((cell.entry.key, cell.preset, cell.task))
        e = cell.entry
        if e.config and not Path(stages.relative(e.config)).is_file():
            continue  # reported above
        req = TrainRequest(recipe=e.recipe, presets=[*cell.presets, *sweep.common_presets],
                           config_file=Path(stages.relative(e.config)) if e.config else None,
                           overrides=stages.overrides(cell), task=cell.task, model="(the base model)",
                           prompt=sweep.prompt, seed=cell.seed, max_steps=sweep.max_steps)
        try:
            config, layers = resolve(req)
            trl_args(config, layers, stages.train_dir(cell.id), use_gpu=False)
        except MedHarnessError as exc:
            problems.append(f"cell {cell.id}: {exc}")


def check_sweep(sweep: SweepConfig, stages: Stages, cells: list[Cell]) -> tuple[list[str], list[str]]:
    """(problems, notes) for the whole sweep; no problems = every cell can start."""
    from medharness.backends import BACKENDS
    from medharness.trainers.launch import LaunchSpec

    problems: list[str] = []
    notes: list[str] = []
    _check_model(sweep, stages, problems, notes)
    _check_tasks(sweep, problems, notes)
    for entry in sweep.entries():
        if entry.config and not Path(stages.relative(entry.config)).is_file():
            problems.append(f"recipe {entry.key}: config file {entry.config} does not exist")
    if sweep.eval.samples and not Path(stages.relative(sweep.eval.samples)).is_file():
        problems.append(f"eval.samples: {sweep.eval.samples} does not exist")
    if sweep.eval.backend != "auto":
        try:
            BACKENDS.get(sweep.eval.backend)
        except MedHarnessError as exc:
            problems.append(f"eval.backend: {exc}")
    for b in sweep.baselines:
        kind = b.removeprefix("baseline:")
        if kind not in ("majority", "random") and not kind.startswith("constant:"):
            problems.append(f"baselines: {b!r} is not majority, random or constant:TEXT")
    try:
        LaunchSpec(sweep.launch.launcher, sweep.launch.num_processes, sweep.launch.deepspeed, sweep.launch.fsdp)
    except MedHarnessError as exc:
        problems.append(f"launch: {exc}")
    _check_training(sweep, stages, cells, problems, notes)
    return problems, notes
