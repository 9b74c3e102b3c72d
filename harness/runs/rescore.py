"""Scoring without a model: re-score a run directory, or score an external predictions file."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medharness.core import stats
from medharness.core.datafiles import decode_text, read_bytes
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import ResultRow, TaskEntry, TaskSummary
from medharness.runs.runlog import RunDir, gc_paused, parse_rows_to_score, split_lines
from medharness.scoring.conventions import CONVENTIONS, split_version
from medharness.scoring.recipe import DistinctScores, Recipe, Scored, cluster_key, summarise, summarise_scored
from medharness.taskfiles.task import Task, load_task, recipe_for

log = logging.getLogger(__name__)
MIN_COVERAGE = 0.95  # below this share of a task's samples, scoring predictions needs allow_partial
ROWS_PER_WORKER = 20_000  # a task's rows are re-scored in parallel only where each worker gets this many


def _task_of(name: str, entry: TaskEntry | None) -> Task:
    path = Path(entry.path) if entry and entry.path else None
    overrides = {"prompt": entry.prompt} if entry and entry.prompt else {}
    return load_task(path if path is not None and path.is_file() else name, overrides)


def score_run(run_dir: Path, convention: str | None = None, workers: int | None = None) -> list[TaskSummary]:
    """Re-score every task of a run from samples/<task>.jsonl under a convention. `workers`: processes for
    a large task (default: the CPUs; each gets at least ROWS_PER_WORKER rows, else one process does it
    all)."""
    run = RunDir.open(run_dir)
    summaries = []
    for name in run.tasks():
        entry = run.log.tasks.get(name)
        if entry is not None and entry.origin is not None and entry.origin.scored_by != "medharness":
            log.warning("%s: task %s was scored by %s (its own metric), not re-scored", run_dir, name,
                        entry.origin.scored_by)
            continue
        if convention is None and entry is not None:
            _check_convention(run_dir, name, entry.convention)
        job = _Job(run.task_file(name), name, entry, convention)
        raw = read_bytes(job.file, "run file")
        shares, n_lines = _split(raw, workers or os.cpu_count() or 1)
        with gc_paused():  # the whole task: the summary reads columns of every row
            parts = _in_parallel(job, raw, n_lines, shares) if len(shares) > 1 else _in_one(job, raw, n_lines)
            task, recipe = _worker["task"], _worker["recipe"]
            ids = [i for p in parts for i in p.ids]
            if len(set(ids)) != len(ids):
                twice = next(i for i, c in Counter(ids).items() if c > 1)
                raise DataError(f"{job.file}: sample '{twice}' appears twice")
            _check_versions(run_dir, task, sum((p.versions for p in parts), Counter()))
            summary = summarise_scored(Scored.concat([p.scored for p in parts]), recipe, task.name,
                                       task.version, task.config.cluster_by)
        summaries.append(summary.model_copy(update={"n_expected": entry.n_selected if entry else None}))
    if not summaries:
        raise DataError(f"{run_dir}: no samples to score")
    return summaries


def _check_convention(run_dir: Path, task: str, recorded: str) -> None:
    """A run scored under another version of a convention than this medharness holds is not re-scored under
    the new rules unless asked (`--convention NAME`): the numbers would change meaning under one name."""
    name, version = split_version(recorded)
    if name in CONVENTIONS and version != (current := CONVENTIONS.get(name)).version:
        raise ConfigError(f"{run_dir}: task {task} was scored under {name}@{version}; this medharness "
                          f"implements {current.qualified} (docs/conventions.md, 'Versions'). Re-score with "
                          f"--convention {current.qualified} to apply the current rules, or with the "
                          "medharness that wrote the run to keep its own")


@dataclass(frozen=True)
class _Job:
    file: Path
    task: str
    entry: TaskEntry | None
    convention: str | None


@dataclass(frozen=True)
class _Part:
    """A worker's share of a task's rows, re-scored and reduced to what the summary reads (no rows)."""

    ids: list[str]
    versions: Counter[str]
    scored: Scored


_worker: dict[str, Any] = {}  # per process: the job, its task and recipe (set by _init)


def _in_one(job: _Job, raw: bytes, n_lines: int) -> list[_Part]:
    text = decode_text(job.file, raw, "run file")
    _init(job)
    return [_score_text(text, 1, n_lines)]


def _init(job: _Job) -> None:
    task = _task_of(job.task, job.entry)
    _worker.update(job=job, task=task, recipe=recipe_for(task, job.convention))


def _score_text(text: str, first: int, last: int) -> _Part:
    """The lines of `text`, numbered from `first` (the file's final line is number `last`), validated
    (`RowToScore`), re-scored and reduced to columns. Each row is dropped once read: only its id, its cluster
    and its scoring input's index stay."""
    job: _Job = _worker["job"]
    task, recipe = _worker["task"], _worker["recipe"]
    assert isinstance(recipe, Recipe)
    cluster_by, version = task.config.cluster_by, task.version
    with gc_paused():
        scores = DistinctScores(recipe)
        add, ids, clusters, other_versions = scores.add, [], [], Counter[str]()
        for row in parse_rows_to_score(job.file, split_lines(text), first, last):
            sample, generation = row["sample"], row["generation"]
            if row["task_version"] != version:
                other_versions[row["task_version"]] += 1
            add(sample, generation["text"], generation.get("error"))
            ids.append(sample["id"])
            clusters.append(cluster_key(sample["id"], sample.get("images", ()), sample.get("meta", _NO_META),
                                        cluster_by))
        scored = Scored.build(scores.results, scores.samples, np.asarray(scores.which, dtype=np.int64),
                              clusters, scores.metas, recipe, task.config.group_by, cluster_by,
                              np.asarray(scores.meta_which, dtype=np.int64))
        versions = other_versions + Counter({version: len(ids) - other_versions.total()})
        return _Part(ids=ids, versions=versions, scored=scored)


_NO_META: dict[str, Any] = {}


def _split(raw: bytes, most: int) -> tuple[list[tuple[int, int, int]], int]:
    """The shares of the file's lines for up to `most` processes, each of ROWS_PER_WORKER lines or more
    (`_shares`), and the number of lines (as `text.split("\\n")` numbers them): one pass over the bytes."""
    shares = _shares(raw, most)
    start, end, first = shares[-1]
    n_lines = first + raw.count(b"\n", start, end)
    n = min(most, n_lines // ROWS_PER_WORKER)
    return (shares if n == len(shares) else _shares(raw, max(n, 1))), n_lines


def _in_parallel(job: _Job, raw: bytes, n_lines: int, shares: list[tuple[int, int, int]]) -> list[_Part]:
    """A process per share, each decoding, validating and re-scoring its share of the file: whole lines,
    numbered as in the file. Forked workers (where the platform has fork) inherit the task, recipe and bytes,
    so nothing is re-imported, re-loaded or sent but where their share starts and ends: they score while this
    process imports what the summary needs (`stats.preload`), time that would otherwise follow the scoring.
    Spawned ones get the job and their share's bytes, and this process takes the first share. A file that is
    no UTF-8 text gets the error `read_text` gives, before any row's."""
    if b"\0" in raw:
        decode_text(job.file, raw, "run file")  # the error of its first byte that is not UTF-8, or NUL
    _init(job)  # this process's task and recipe: the summary's, and the forked workers'
    if "fork" in multiprocessing.get_all_start_methods():
        _worker["raw"] = raw
        try:
            with ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("fork")) as pool:
                futures = [pool.submit(_score_share, *share, n_lines) for share in shares]
                stats.preload()
                return _in_order(job, raw, futures)
        finally:
            del _worker["raw"]
    with ProcessPoolExecutor(len(shares) - 1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init, initargs=(job,)) as pool:
        futures = [pool.submit(_score_bytes, raw[start:end], start == 0, first, n_lines)
                   for start, end, first in shares[1:]]
        start, end, first = shares[0]
        own: Future[_Part] = Future()
        try:
            own.set_result(_score_bytes(raw[start:end], True, first, n_lines))
        except Exception as exc:  # noqa: BLE001 - ranked with the workers' errors
            own.set_exception(exc)
        return _in_order(job, raw, [own, *futures])


def _in_order(job: _Job, raw: bytes, futures: list[Future[_Part]]) -> list[_Part]:
    """The workers' parts, in the file's order; where a share is not UTF-8, the file's first such byte is the
    error (as `read_text` reads before any row is), else the first share's error is."""
    errors = [f.exception() for f in futures]
    if any(isinstance(e, _NotUTF8) for e in errors):
        decode_text(job.file, raw, "run file")
    for e in errors:
        if e is not None:
            raise e
    return [f.result() for f in futures]


class _NotUTF8(Exception):
    """A share's bytes are not UTF-8 (the error names the file's first such byte: `decode_text`)."""


def _shares(raw: bytes, n: int) -> list[tuple[int, int, int]]:
    """`raw` cut into at most `n` runs of whole lines of about equal length: (start, end, number of the first
    line), `raw[start:end]` without the newline that ends it. A newline byte is never part of another UTF-8
    character, so the shares decode apart as the whole decodes."""
    shares: list[tuple[int, int, int]] = []
    start, first = 0, 1
    while start <= len(raw):
        cut = len(raw) * (len(shares) + 1) // n
        end = raw.find(b"\n", max(start, cut)) if len(shares) < n - 1 else -1
        end = len(raw) if end < 0 else end
        shares.append((start, end, first))
        first += raw.count(b"\n", start, end) + 1
        start = end + 1
    return shares


def _score_share(start: int, end: int, first: int, last: int) -> _Part:
    """A forked worker's share: raw[start:end] of the bytes it inherited (decoded in place, not copied)."""
    return _score_bytes(memoryview(_worker["raw"])[start:end], start == 0, first, last)


def _score_bytes(raw: bytes | memoryview, at_start: bool, first: int, last: int) -> _Part:
    """`_score_text` of a share's bytes (`at_start`: the file's first, where a BOM is dropped)."""
    try:
        text = str(raw, "utf-8-sig" if at_start else "utf-8")
    except UnicodeDecodeError:
        raise _NotUTF8 from None
    return _score_text(text, first, last)


def _check_versions(run_dir: Path, task: Task, versions: Counter[str]) -> None:
    """Rows made under another version of the task (its gold, prompt or parser may differ) are not re-scored
    under this one."""
    other = {v: n for v, n in versions.items() if v != task.version}
    if other:
        made = ", ".join(f"{n} under version {v!r}" for v, n in sorted(other.items()))
        raise DataError(f"{run_dir}: {sum(other.values())} of {sum(versions.values())} rows of task "
                        f"{task.name} were made under another task version ({made}); the task file "
                        f"{task.path} is version {task.version!r}. Score them with the task file of that "
                        "version, or run again")


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
    from medharness.backends.predictions import read_predictions  # here: `score RUN_DIR` never reads one

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
