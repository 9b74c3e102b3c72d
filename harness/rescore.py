"""Scoring without a model: re-score a run directory, or score an external predictions file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medharness.errors import DataError
from medharness.predictions import read_predictions
from medharness.records import ResultRow, TaskEntry, TaskSummary
from medharness.runlog import RunDir, gc_paused
from medharness.scoring import recipe_for, rescore, summarise
from medharness.task import Task, load_task

log = logging.getLogger(__name__)
MIN_COVERAGE = 0.95  # below this share of a task's samples, scoring predictions needs allow_partial


def _task_of(name: str, entry: TaskEntry | None) -> Task:
    path = Path(entry.path) if entry and entry.path else None
    overrides = {"prompt": entry.prompt} if entry and entry.prompt else {}
    return load_task(path if path is not None and path.is_file() else name, overrides)


def score_run(run_dir: Path, convention: str | None = None) -> list[TaskSummary]:
    """Re-score every task of a run from samples/<task>.jsonl under a convention."""
    run = RunDir.open(run_dir)
    summaries = []
    for name in run.tasks():
        entry = run.log.tasks.get(name)
        if entry is not None and entry.origin is not None and entry.origin.scored_by != "medharness":
            log.warning("%s: task %s was scored by %s (its own metric), not re-scored", run_dir, name,
                        entry.origin.scored_by)
            continue
        task = _task_of(name, entry)
        recipe = recipe_for(task, convention)
        with gc_paused():
            rows = run.rows(name)
            _check_versions(run_dir, task, rows)
            summary = summarise(rescore(rows, recipe), recipe, task.config.group_by, task.name, task.version,
                                task.config.cluster_by)
        summaries.append(summary.model_copy(update={"n_expected": entry.n_selected if entry else None}))
    if not summaries:
        raise DataError(f"{run_dir}: no samples to score")
    return summaries


def _check_versions(run_dir: Path, task: Task, rows: list[ResultRow]) -> None:
    """Rows made under another version of the task (its gold, prompt or parser may differ) are not re-scored
    under this one."""
    other: dict[str, int] = {}
    for row in rows:
        if row.task_version != task.version:
            other[row.task_version] = other.get(row.task_version, 0) + 1
    if other:
        made = ", ".join(f"{n} under version {v!r}" for v, n in sorted(other.items()))
        raise DataError(f"{run_dir}: {sum(other.values())} of {len(rows)} rows of task {task.name} were made "
                        f"under another task version ({made}); the task file {task.path} is version "
                        f"{task.version!r}. Score them with the task file of that version, or run again")


def score_predictions(task_ref: str, predictions: Path, convention: str | None = None,
                      data_dir: str | None = None, id_field: str | None = None,
                      prediction_field: str | None = None,
                      overrides: dict[str, dict[str, Any]] | None = None,
                      allow_partial: bool = False) -> tuple[TaskSummary, dict[str, int]]:
    """Score an external predictions file against the task's gold (joined by sample id). Returns the summary
    (`n` matched of `n_expected`) and how many ids matched. A file that matches fewer than MIN_COVERAGE of the
    task's samples is refused unless `allow_partial`."""
    ref: str | Path = Path(task_ref) if task_ref.endswith((".yaml", ".yml")) else task_ref
    name = ref.stem if isinstance(ref, Path) else ref
    task_overrides = dict((overrides or {}).get(name, {}))
    if data_dir:
        task_overrides["data_dir"] = data_dir
    task = load_task(ref, task_overrides)
    samples = task.load_samples()
    preds = read_predictions(predictions, id_field, prediction_field)
    matched = [s for s in samples if s.id in preds]
    if not matched:
        example = next(iter(preds))
        raise DataError(f"{predictions}: none of its {len(preds)} ids match task {task.name} "
                        f"(e.g. '{example}' vs the task's '{samples[0].id if samples else '-'}')")
    if len(matched) < MIN_COVERAGE * len(samples) and not allow_partial:
        raise DataError(f"{predictions}: matches only {len(matched)} of the {len(samples)} samples of task "
                        f"{task.name} (under {MIN_COVERAGE:.0%}); a score of so few is not the task's score. "
                        "Pass --allow-partial to score the matched samples only (shown as "
                        f"{len(matched)}/{len(samples)})")
    unmatched = len(preds) - len(matched)
    recipe = recipe_for(task, convention)
    rows = []
    for sample in matched:
        gen = preds[sample.id].generation(sample.id, f"file:{predictions}")
        answer, scores = recipe.score(sample, gen)
        rows.append(ResultRow(task=task.name, task_version=task.version, sample=sample, prompt_hash="",
                              generation=gen, answer=answer, scores=scores))
    report = {"matched": len(matched), "task_samples": len(samples), "unmatched_predictions": unmatched}
    summary = summarise(rows, recipe, task.config.group_by, task.name, task.version, task.config.cluster_by)
    return summary.model_copy(update={"n_expected": len(samples)}), report
