"""`train-then-eval --dry-run`: resolve and check every cell without training.

Checked: the base model (a folder with a config, a `tiny` spec, or a hub id: noted, not fetched), every train
and eval task (loads, the train split exists, each k-shot subset is non-empty), the files the sweep names,
the eval backend and baselines, the launch settings, and, where the `train` command is installed, its recipes,
presets and each cell's resolved config down to TRL's own checks (e.g. num_generations vs the batch size).
Problems are collected (not raised one by one) so that one dry run lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medharness.backends import BACKENDS
from medharness.backends.vlm_common import hub_snapshot
from medharness.core.errors import DataError, MedHarnessError
from medharness.taskfiles.splits import kshot
from medharness.taskfiles.task import load_task, recipe_for
from medharness.trainers.cli import parse_train_args, train_request
from medharness.trainers.config import preset_names, trl_args
from medharness.trainers.launch import LaunchSpec
from medharness.trainers.recipes.base import recipe_class
from medharness.trainers.run import dry_run, resolve
from medharness.trainers.sweeps.board import groups, published_board, published_rows, select
from medharness.trainers.sweeps.schema import (
    Cell,
    SweepConfig,
    all_eval_tasks,
    eval_prompt,
    eval_tasks,
    train_prompt,
)
from medharness.trainers.sweeps.stages import Command, Stages, reference_rows


@dataclass
class Findings:
    """What a dry run found: problems (a cell cannot start), notes, and data not on this machine (warnings:
    the configuration is sound, the cells that read it cannot start here)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing_data: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # sound, but not what a user may expect


def sweep_task(name: str, sweep: SweepConfig, prompt: str | None) -> Any:
    """The task as the sweep's commands load it; an unknown prompt variant is an error here."""
    overrides = {k: v for k, v in (("data_dir", sweep.data_dir), ("prompt", prompt)) if v}
    task = load_task(name, overrides)
    task.prompt_name  # noqa: B018 - raises for an unknown variant
    return task


def _samples(task: Any, split: str | None, found: Findings) -> list[Any] | None:
    """The task's samples; None (and a warning) when its data is not on this machine, None (and a problem)
    when it cannot be read."""
    try:
        task.source  # noqa: B018 - local-only tasks without their data fail here
    except DataError as exc:
        message = f"{exc} (not checked: its samples and k-shot subsets)"
        if message not in found.missing_data:
            found.missing_data.append(message)
        return None
    try:
        return list(task.load_samples(split))
    except DataError as exc:
        if getattr(task.source, "kind", None) == "hf":  # a hub dataset that cannot be reached from here
            found.missing_data.append(f"task {task.name} ({split or 'eval'} split): {exc}")
        else:
            found.problems.append(f"task {task.name} ({split or 'eval'} split): {exc}")
        return None
    except MedHarnessError as exc:
        found.problems.append(f"task {task.name} ({split or 'eval'} split): {exc}")
        return None


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
        cached = hub_snapshot(model)
        notes.append(f"base model: hub id {model} "
                     f"({'in the local cache' if cached else 'not in the local cache'})")


def _check_tasks(sweep: SweepConfig, cells: list[Cell], found: Findings) -> None:
    """Every (training task, prompt) and (eval task, prompt) of the cells loads; samples where the data is
    here."""
    seeds = [sweep.split_seed] if sweep.split_seed is not None else sweep.seeds
    trains = dict.fromkeys((c.task, train_prompt(sweep, c)) for c in cells)
    evals = dict.fromkeys((t, eval_prompt(sweep, c, t)) for c in cells for t in eval_tasks(sweep, c))
    if sweep.base_row or sweep.baselines:
        evals.update(dict.fromkeys((t, eval_prompt(sweep, None, t)) for t in all_eval_tasks(sweep)))
    for (name, prompt), kind in [*((k, "train") for k in trains), *((k, "eval") for k in evals)]:
        label = f"{kind} task {name}" + (f" (prompt {prompt})" if prompt else "")
        try:
            task = sweep_task(name, sweep, prompt)
        except MedHarnessError as exc:
            found.problems.append(f"{label}: {exc}")
            continue
        samples = _samples(task, "train" if kind == "train" else None, found)
        if samples is None:
            continue
        if kind == "eval":
            k, limit = sweep.eval.subset_k(name), sweep.eval.limit
            chosen = len(kshot(samples, k, sweep.eval.subset_seed)) if k else len(samples)
            found.notes.append(f"{label}: {min(chosen, limit) if limit else chosen} of {len(samples)} samples"
                               + (f" (k={k} per class, seed {sweep.eval.subset_seed})" if k else ""))
            continue
        shot_values = {sweep.kshot(c.task, c.shots) for c in cells if c.task == name}
        for k in sorted(shot_values, key=lambda k: k or 0):
            if k is None:
                found.notes.append(f"{label}: {len(samples)} training samples")
                continue
            sizes = sorted({len(kshot(samples, k, seed)) for seed in seeds})
            if 0 in sizes or not samples:
                found.problems.append(f"{label}: the {k}-shot subset is empty")
            found.notes.append(f"{label}: k={k} per class -> {'/'.join(map(str, sizes))} samples")


def _check_training(sweep: SweepConfig, stages: Stages, cells: list[Cell], problems: list[str],
                    notes: list[str], warnings: list[str]) -> None:
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
    import importlib.util

    # a light install: the TRL settings are checked when cells train
    if importlib.util.find_spec("trl") is None:
        notes.append("TRL settings not checked (trl is not installed: pip install 'medharness[train]')")
        return

    checked: set[tuple[str, str | None, str]] = set()
    for cell in cells:  # each cell's train command, parsed as `train` parses it, down to TRL's own checks
        if (cell.entry.key, cell.preset, cell.task) in checked:
            continue
        checked.add((cell.entry.key, cell.preset, cell.task))
        e = cell.entry
        if e.config and not Path(stages.relative(e.config)).is_file():
            continue  # reported above
        try:
            model = stages.cell_model(cell, build=False)
        except MedHarnessError:
            continue  # reported by the model check
        try:
            argv = stages.train_args(cell, model, stages.split_file(cell), resume=False)
            config, layers = resolve(train_request(parse_train_args(argv)))
            trl_args(config, layers, stages.dir.train_dir(cell.id).root, use_gpu=False)
        except MedHarnessError as exc:
            problems.append(f"cell {cell.id}: {exc}")
            continue
        for task in eval_tasks(sweep, cell):
            try:
                budget, replaced = stages.eval_budget(cell, task)
            except MedHarnessError:
                continue  # the task check reports it
            if replaced is not None:
                warnings.append(f"cell {cell.id} evaluates {task} with {budget} new tokens, its "
                             f"training completion length: the evaluation budget ({replaced}: "
                             "eval.max_new_tokens or the prompt variant's) is below it and would cut the "
                             "policy's answers")


def check_sweep(sweep: SweepConfig, stages: Stages, cells: list[Cell]) -> Findings:
    """Everything a sweep needs; no problems = every cell can start (where its data is here)."""
    found = Findings()
    problems, notes = found.problems, found.notes
    _check_model(sweep, stages, problems, notes)
    _check_tasks(sweep, cells, found)
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
        except ImportError as exc:  # a registered backend whose libraries are not here (a login node)
            notes.append(f"eval.backend {sweep.eval.backend}: not importable here ({exc}); the machines that "
                         "run the cells need it")
    for b in sweep.baselines:
        kind = b.removeprefix("baseline:")
        if kind not in ("majority", "random") and not kind.startswith("constant:"):
            problems.append(f"baselines: {b!r} is not majority, random or constant:TEXT")
    try:
        LaunchSpec(sweep.launch.launcher, sweep.launch.num_processes, sweep.launch.deepspeed,
                   sweep.launch.fsdp)
    except MedHarnessError as exc:
        problems.append(f"launch: {exc}")
    _check_training(sweep, stages, cells, problems, notes, found.warnings)
    check_table(sweep, stages, cells, found)
    return found


def check_table(sweep: SweepConfig, stages: Stages, cells: list[Cell], found: Findings) -> None:
    """The board spec `reference:` names loads and its published rows' columns are the table's; every table
    row selects exactly one board row (or a reference row this sweep evaluates); every column's task is
    evaluated and has its metric."""
    ref = None
    if sweep.reference:
        try:
            ref = published_board(sweep, stages.base_dir)
        except MedHarnessError as exc:
            found.problems.append(f"reference: {exc}")
    if ref is not None:
        sources = sorted({r.source for r in published_rows(ref) if r.source})
        found.notes.append(f"reference: {len(published_rows(ref))} published rows from board {ref.name}"
                           + (f" ({'; '.join(sources)})" if sources else ""))
    spec = sweep.table
    if spec is None:
        return
    labels = [c.label for c in spec.columns]
    for kind, names in (("column", labels), ("row", [r.label for r in spec.rows])):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            found.problems.append(f"table: {kind} label(s) {twice} appear more than once")
    named = {c for r in published_rows(ref) for c in r.published or {}} if ref else set()
    if named - set(labels):
        found.problems.append(f"reference: board {ref and ref.name} publishes columns "
                              f"{sorted(named - set(labels))} that are not columns of the table ({labels})")
    refs = reference_rows(sweep)
    metric_tasks: set[tuple[str, str | None, str | None]] = set()
    for row in spec.rows:
        where = f"table row {row.label!r}"
        if (row.reference is None) == (row.entry is None):
            found.problems.append(f"{where}: give one of `reference:` (a reference row) or `entry:` (a "
                                  "recipe id)")
            continue
        if row.reference is not None:
            if row.reference not in refs:
                found.problems.append(f"{where}: no reference row {row.reference!r} (this sweep has "
                                      f"{', '.join(refs) or 'none'})")
            evaluated = set(all_eval_tasks(sweep))
            first: Cell | None = None
        else:
            keys = select(row, cells)
            if len(keys) != 1:
                found.problems.append(f"{where}: selects {len(keys)} board rows {keys}; give `preset:` / "
                                      "`shots:` so it selects one" if keys else f"{where}: selects no cell "
                                      f"(entry {row.entry!r}, preset {row.preset!r}, shots {row.shots!r})")
                continue
            members = groups(cells)[keys[0]]
            evaluated = {t for c in members for t in eval_tasks(sweep, c)}
            first = members[0]
        unknown = sorted(set(row.blank) - set(labels))
        if unknown:
            found.problems.append(f"{where}: blank {unknown} are not columns of the table ({labels})")
        for col in (c for c in spec.columns if not c.average and c.label not in row.blank):
            task = row.task or col.task
            if task is None:
                found.problems.append(f"{where}, column {col.label!r}: no task (give the column or the row "
                                      "one)")
            elif task not in evaluated:
                found.problems.append(f"{where}, column {col.label!r}: task {task} is not evaluated for this "
                                      "row")
            else:
                metric_tasks.add((task, eval_prompt(sweep, first, task), col.metric))
    _check_metrics(sweep, metric_tasks, found)


def _check_metrics(sweep: SweepConfig, wanted: set[tuple[str, str | None, str | None]],
                   found: Findings) -> None:
    for task_name, prompt, metric in sorted(wanted, key=str):
        if metric is None:
            continue
        try:
            task = sweep_task(task_name, sweep, prompt)
            labels = [m.label for m in recipe_for(task, prompt=task.prompt_name).metrics]
        except MedHarnessError:
            continue  # reported by the task checks
        if metric not in labels:
            found.problems.append(f"table: task {task_name} (prompt {task.prompt_name}) reports no metric "
                                  f"{metric!r}; it reports {', '.join(labels)}")


# -- `--dry-run --json`: what each cell would run ---------------------------------------------------------

def eval_settings(sweep: SweepConfig, stages: Stages, cell: Cell | None, task: str,
                  reference: tuple[str, str | None] | None = None) -> dict[str, Any]:
    """One evaluation as the sweep runs it (`cell` None: the `reference` row's, (name, model)): the task's
    prompt variant and its text, the generation budget it runs with (a trained cell's raised to its training
    completion length), the judges among its metrics, and the `run` command."""
    e = sweep.eval
    loaded = sweep_task(task, sweep, eval_prompt(sweep, cell, task))
    budget, replaced = stages.eval_budget(cell, task) if cell is not None else (e.max_new_tokens, None)
    metrics = recipe_for(loaded, prompt=loaded.prompt_name).metrics
    judges = [str(m.args.get("judges") or m.args.get("panel")) for m in metrics
              if m.args.get("judges") or m.args.get("panel")]
    if cell is not None:
        model, baseline = str(stages.dir.train_dir(cell.id).final), False
        out = stages.dir.eval_dir(cell.id, task)
    else:
        assert reference is not None
        name, given = reference
        model = given or stages.base_model(build=False)
        out, baseline = stages.dir.reference_dir(name, task), given is not None
    command = Command(stages.eval_args(model, task, out, False, baseline=baseline,
                                       prompt=eval_prompt(sweep, cell, task), max_new_tokens=budget)).text()
    return {"task": task, "prompt": loaded.prompt_name, "system": loaded.prompt_spec.system,
            "user": loaded.prompt_spec.user,
            "max_new_tokens": budget or loaded.settings().max_new_tokens, "budget_raised_from": replaced,
            "judges": list(dict.fromkeys(judges)), "metrics": [m.label for m in metrics],
            "limit": e.limit, "samples": e.samples, "per_class": e.subset_k(task),
            "subset_seed": e.subset_seed if e.subset_k(task) else None,
            "backend": e.backend, "batch_size": e.batch_size,
            "backend_options": e.backend_options, "ablate": list(e.ablate), "checkpoints": e.checkpoints,
            "command": command}


def cell_settings(sweep: SweepConfig, stages: Stages, cell: Cell) -> dict[str, Any]:
    """A cell as `train-then-eval --dry-run --json` prints it: its resolved train config (the object
    `train --dry-run --json` prints for its train command) and its evaluation settings per eval task; a part
    that cannot be resolved holds {"error": ...}."""
    out: dict[str, Any] = {"id": cell.id, "stage": cell.stage, "recipe": cell.entry.recipe,
                           "entry": cell.entry.key, "preset": cell.preset, "task": cell.task,
                           "shots": cell.shots, "seed": cell.seed, "parent": cell.parent}
    try:
        argv = stages.train_args(cell, stages.cell_model(cell, build=False), stages.split_file(cell), False)
        out["train_command"] = Command(argv).text()
        out["train"] = dry_run(train_request(parse_train_args(argv)), data_elsewhere=True)
    except MedHarnessError as exc:
        out["train"] = {"error": str(exc)}
    out["eval"] = {}
    for task in eval_tasks(sweep, cell):
        try:
            out["eval"][task] = eval_settings(sweep, stages, cell, task)
        except MedHarnessError as exc:
            out["eval"][task] = {"task": task, "error": str(exc)}
    return out


def reference_settings(sweep: SweepConfig, stages: Stages, name: str, model: str | None) -> dict[str, Any]:
    """A reference row (the base model, a baseline) and its evaluation settings per task."""
    evals: dict[str, Any] = {}
    for task in all_eval_tasks(sweep):
        try:
            evals[task] = eval_settings(sweep, stages, None, task, (name, model))
        except MedHarnessError as exc:
            evals[task] = {"task": task, "error": str(exc)}
    return {"id": name, "model": model or sweep.model, "eval": evals}
