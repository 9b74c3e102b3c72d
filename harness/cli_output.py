"""What the CLI shows: progress bars, summary tables, listings, validation reports."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tabulate import tabulate

from medharness.records import TaskSummary
from medharness.runlog import RunDir, json_safe


@contextmanager
def progress_bar(disabled: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per task on stderr; yields the pipeline's progress callback."""
    if disabled or not sys.stderr.isatty():
        last: dict[str, int] = {}

        def plain(task: str, done: int, total: int) -> None:
            if done == total and last.get(task) != done:
                print(f"{task}: {done}/{total} samples", file=sys.stderr)
            last[task] = done

        yield plain
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars: dict[str, TaskID] = {}
    with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as progress:

        def update(task: str, done: int, total: int) -> None:
            if task not in bars:
                bars[task] = progress.add_task(task, total=total)
            progress.update(bars[task], completed=done)

        yield update


def summary_rows(summary: TaskSummary, percent: dict[str, bool]) -> list[list[object]]:
    rows = []
    for name, m in summary.metrics.items():
        scale = 100.0 if percent.get(name, True) else 1.0
        value = "n/a" if m.value != m.value else f"{m.value * scale:.2f}"
        err = "" if m.stderr is None else f"{m.stderr * scale:.2f}"
        rows.append([summary.task, summary.convention, name, value, err, m.n, m.n_unparsed - m.n_errors,
                     m.n_errors, _coverage(summary)])
    return rows


HEADERS = ["task", "convention", "metric", "value", "stderr", "n", "unparsed", "gen errors", "samples"]


def _coverage(summary: TaskSummary) -> str:
    """'20/451' when only part of the task's samples was scored, else the sample count."""
    partial = summary.n_expected is not None and summary.n_expected != summary.n
    return f"{summary.n}/{summary.n_expected}" if partial else str(summary.n)


def coverage_notes(summaries: list[TaskSummary]) -> list[str]:
    """What the table's numbers leave out: failed generations (no answer at all, not a wrong one) and samples
    never scored."""
    notes = []
    for s in summaries:
        if s.n_errors:
            notes.append(f"{s.task}: {s.n_errors} of {s.n} generations failed (no answer from the model; zero "
                         "credit, counted under 'gen errors', apart from answers the parser could not read)")
        if s.n_expected is not None and s.n < s.n_expected:
            notes.append(f"{s.task}: only {s.n} of its {s.n_expected} samples were scored: a partial result")
    return notes


def print_run_summary(run: RunDir) -> None:
    rows = []
    summaries = [e.summary for e in run.log.tasks.values() if e.summary is not None]
    for entry in run.log.tasks.values():
        if entry.summary is not None:
            rows += summary_rows(entry.summary, entry.percent)
    print(f"\nrun {run.path} ({run.log.status}; model {run.log.model})\n")
    print(tabulate(rows, headers=HEADERS, tablefmt="github"))
    for note in coverage_notes(summaries):
        print(f"note: {note}")


def _percent_of(summary: TaskSummary) -> dict[str, bool]:
    from medharness.metrics import METRICS

    out = {}
    for label in summary.metrics:
        out[label] = METRICS.get(label).percent if label in METRICS else True
    return out


def print_summaries(summaries: list[TaskSummary], as_json: bool = False) -> None:
    if as_json:
        data = [s.to_score_json() for s in summaries]
        print(json.dumps(json_safe(data[0] if len(data) == 1 else data), indent=2))
        return
    for s in summaries:
        print(tabulate(summary_rows(s, _percent_of(s)), headers=HEADERS, tablefmt="github"))
        for field, groups in s.groups.items():
            metric_names = list(s.metrics)
            table = [[value, int(g["n"]), *[_fmt(g.get(m)) for m in metric_names]] for value, g in groups.items()]
            print(f"\nby {field}:\n" + tabulate(table, headers=[field, "n", *metric_names], tablefmt="github"))
        print()
    for note in coverage_notes(summaries):
        print(f"note: {note}")


def print_judging(run: RunDir, usage: dict[str, Any], disagreements: Path, n_disagreements: int) -> None:
    """Each judge's bill for this pass, then the run's judge and panel columns."""
    members = run.log.judges
    rows = []
    for name, use in usage.items():
        member = members.get(name)
        cost = member.usage.cost_usd if member else None
        rows.append([name, member.spec if member else None, use.judged, use.failed, use.skipped, use.calls,
                     use.cache_hits, use.prompt_tokens, use.completion_tokens, "" if cost is None else f"{cost:.4f}"])
    print("\njudges (this pass):\n" + tabulate(rows, headers=[
        "judge", "spec", "judged", "failed", "skipped", "calls", "cache hits", "prompt tok", "completion tok",
        "run cost USD"], tablefmt="github"))
    table = []
    for task, entry in run.log.tasks.items():
        for column, c in (entry.judges.columns if entry.judges else {}).items():
            scale = 100.0 if c.percent else 1.0
            value = "n/a" if c.value is None else f"{c.value * scale:.2f}"
            table.append([task, column, value, c.n, c.n_unscored, c.n_failed])
    print("\n" + tabulate(table, headers=["task", "column", "value", "n scored", "unscored", "judge failed"],
                          tablefmt="github"))
    print(f"\n{n_disagreements} disagreeing sample(s): {disagreements}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def print_listing(what: str) -> None:
    if what == "tasks":
        from medharness.task import discover_tasks, parse_task_file

        rows = []
        for name, path in discover_tasks().items():
            c = parse_task_file(path)
            size = c.card.sizes.get(c.split, "")
            rows.append([name, c.family or "", c.card.modality, size, c.card.licence, c.scoring.convention,
                         ",".join(c.prompts.variants)])
        print(tabulate(rows, headers=["task", "family", "modality", "size", "licence", "convention", "prompts"],
                       tablefmt="github"))
        return
    if what == "metrics":
        from medharness.metrics import METRICS

        rows = [[n, "higher" if m.higher_is_better else "lower", "corpus" if m.corpus else "mean",
                 m.description] for n, m in METRICS.items()]
        print(tabulate(rows, headers=["metric", "better", "aggregation", "description"], tablefmt="github"))
        return
    if what == "conventions":
        from medharness.conventions import CONVENTIONS

        rows = [[n, c.description.split(". ")[0]] for n, c in CONVENTIONS.items()]
        print(tabulate(rows, headers=["convention", "rule"], tablefmt="github"))
        return
    if what == "judges":
        from medharness.judges.specs import JUDGES, get_spec

        rows = []
        for name in JUDGES.names():
            spec = get_spec(name)
            levels = f"{spec.levels[0]:g}..{spec.levels[-1]:g}" if spec.scale == "ordinal" else "0/1"
            rows.append([name, spec.scale, ", ".join(spec.fields), levels, spec.prompt_hash])
        print(tabulate(rows, headers=["judge spec", "scale", "verdict fields", "values", "prompt hash"],
                       tablefmt="github"))
        return
    registry = _registry(what)
    for name in registry.names():
        print(name)


def _registry(what: str) -> Any:
    if what == "parsers":
        from medharness.parsers import PARSERS

        return PARSERS
    if what == "normalizers":
        from medharness.normalize import NORMALIZERS

        return NORMALIZERS
    from medharness.backends import BACKENDS

    return BACKENDS


def validate_files(files: list[Path]) -> int:
    """Check each task file as `run` would without data: the schema (names, generation settings, templates,
    group_by and placeholders against the sources' fields, parser and metric arguments), every prompt variant's
    scoring recipe and knowledge file."""
    from medharness.errors import MedHarnessError
    from medharness.scoring import recipe_for
    from medharness.task import Task, discover_tasks, parse_task_file, read_knowledge

    paths = files or list(discover_tasks().values())
    failures = 0
    for path in paths:
        try:
            config = parse_task_file(path)
            task = Task(config, path)
            for variant, spec in config.prompts.variants.items():
                recipe_for(task, prompt=variant)
                if spec.knowledge:
                    read_knowledge(path.parent / spec.knowledge)
            print(f"ok    {path}")
        except MedHarnessError as exc:
            failures += 1
            print(f"FAIL  {exc}" if str(path) in str(exc) else f"FAIL  {path}: {exc}")
    print(f"{len(paths) - failures} valid, {failures} invalid")
    return 1 if failures else 0
