"""`medharness import`: a peer's per-sample outputs -> a medharness run directory.

Each matched row becomes a `ResultRow` whose generation is the peer's raw text, scored by the task's own
recipe (so `score --convention`, `judge`, `agreement` and the leaderboards work on it as on any run); the
model name and the peer's version make the fingerprint, and the task entry's `origin` records the file, its
hash, the id mapping and the match counts. The run directory is written through `runlog.RunDir`, like every
other run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.bridges.peerfiles import PeerFile, read_peer_file
from medharness.core.display import plain
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import (
    Generation,
    ImportSettings,
    PeerOrigin,
    ResultRow,
    TaskEntry,
    check_safe_name,
)
from medharness.runs.runlog import RunDir
from medharness.scoring.recipe import metric_is_percent, metric_records, summarise
from medharness.taskfiles.task import Task, load_task, recipe_for


@dataclass
class ImportRequest:
    tool: str
    file: Path
    task: str
    output: Path
    data_dir: str | None = None
    overrides: dict[str, Any] | None = None
    model_name: str | None = None  # overrides what the file says
    tool_version: str | None = None
    id_field: str = "id"
    id_map: Path | None = None
    allow_unmatched: bool = False
    label: str | None = None


def load_for_import(task_ref: str, data_dir: str | None, overrides: dict[str, Any] | None) -> Task:
    values = dict(overrides or {})
    if data_dir:
        values["data_dir"] = data_dir
    return load_task(task_ref, values)


def match_rows(peer: PeerFile, task: Task,
               allow_unmatched: bool) -> tuple[list[tuple[Any, str]], int, int, list[str]]:
    """(sample, text) for each row whose id is a sample of the task, the unmatched count, the task's sample
    count, and what is wrong with the matching (nothing: an empty list)."""
    samples = task.load_samples()
    by_id = {s.id: s for s in samples}
    seen: dict[str, int] = {}
    for sid, _ in peer.rows:
        seen[sid] = seen.get(sid, 0) + 1
    twice = [sid for sid, n in seen.items() if n > 1]
    matched = [(by_id[sid], text) for sid, text in peer.rows if sid in by_id]
    unmatched = [sid for sid, _ in peer.rows if sid not in by_id]
    where = f"{len(matched)} of its {len(peer.rows)} rows match a sample of task {task.name}"
    problems = []
    if twice:
        problems.append(f"{where}; {len(twice)} id(s) appear more than once (e.g. {twice[0]!r}): one row per "
                        "sample is expected")
    if not matched:
        example = unmatched[0] if unmatched else "-"
        problems.append(f"{where} ({len(samples)} samples; e.g. the file's {example!r} vs the task's "
                        f"{samples[0].id if samples else '-'!r}): a file of another task, or another id "
                        "mapping?")
    elif unmatched and not allow_unmatched:
        problems.append(f"{where}; {len(unmatched)} match none (e.g. {unmatched[0]!r}); pass "
                        "--allow-unmatched to import the matched rows only")
    return matched, len(unmatched), len(samples), problems


def import_predictions(req: ImportRequest) -> RunDir:
    """Read, match and score a peer file, then write the run directory (refused if it exists). Every problem
    found with the file (another task, ids, rows that contradict the id map, no model name) is reported at
    once; a file that is not of the tool's format stops the reading."""
    if req.label is not None:
        try:  # the same names as `run --label`
            check_safe_name(req.label, "--label")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    peer = read_peer_file(req.tool, req.file, id_field=req.id_field, id_map=req.id_map)
    problems = list(peer.problems)
    model = " ".join(plain(req.model_name or peer.model or "").split())  # a peer's name: no ANSI, one line
    if not model:
        why = peer.results_problem or "no results file beside it"
        problems.append(f"the file does not name its model ({why}); pass --model-name")
    version = req.tool_version or peer.tool_version
    task = load_for_import(req.task, req.data_dir, req.overrides)
    matched, n_unmatched, n_samples, unmatching = match_rows(peer, task, req.allow_unmatched)
    problems[:0] = unmatching
    if problems:
        raise DataError(f"{req.file}: " + (problems[0] if len(problems) == 1 else
                                           f"{len(problems)} problems: " + "; ".join(
                                               f"({i}) {p}" for i, p in enumerate(problems, 1))))
    assert model is not None
    recipe = recipe_for(task)
    fingerprint = f"{req.tool}{'==' + version if version else ''}:{model}"
    rows = []
    for sample, text in matched:
        gen = Generation(sample_id=sample.id, text=text, model=fingerprint)
        answer, scores = recipe.score(sample, gen)
        rows.append(ResultRow(task=task.name, task_version=task.version, sample=sample, prompt_hash="",
                              generation=gen, answer=answer, scores=scores))
    origin = PeerOrigin(tool=req.tool, tool_version=version, file=str(req.file.resolve()), sha256=peer.sha256,
                        model=model, id_mapping=peer.id_mapping, n_rows=peer.n_rows, n_matched=len(rows),
                        n_unmatched=n_unmatched, n_task_samples=n_samples)
    config = ImportSettings(model=model, backend=f"import:{req.tool}", tasks=task.name, data_dir=req.data_dir,
                            overrides={task.name: req.overrides} if req.overrides else {},
                            predictions=str(req.file))
    run = RunDir.create(req.output, config, label=req.label)
    try:
        run.set_origin(f"imported from {req.tool} file {req.file}")
        run.set_model(fingerprint)
        run.set_task(task.name, TaskEntry(
            version=task.version, prompt=task.prompt_name, convention=recipe.convention,
            parser=recipe.parser.name, group_by=list(task.config.group_by), data=task.load_report,
            n_selected=len(rows), percent=metric_is_percent(recipe), metrics=metric_records(recipe),
            path=str(task.path), origin=origin))
        run.append(task.name, rows)
        run.update_task(task.name, summary=summarise(rows, recipe, task.config.group_by,
                                                     task.name, task.version))
        run.set_status("finished")
    finally:
        run.close()
    return run
