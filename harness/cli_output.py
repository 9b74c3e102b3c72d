"""What the CLI shows: progress bars, summary tables, listings, validation reports."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tabulate import tabulate

from medharness.records import TaskSummary
from medharness.runlog import RunDir, json_safe

PROGRESS_EVERY_S = 30.0  # without a terminal: one progress line per task at most this often


class ProgressLines:
    """Progress as plain lines, for a log file, CI or nohup (no terminal to draw a bar on): a line when a task
    starts, then at most one every `every` seconds while it runs (done/total, rate, time left), and one when it
    ends. `every=None`: the end line only (`--no-progress`). `clock` is injectable for tests."""

    def __init__(self, every: float | None = PROGRESS_EVERY_S, stream: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.stream, self.clock = every, stream, clock
        self.started: dict[str, tuple[float, int]] = {}  # task -> (time, samples already done then)
        self.printed: dict[str, float] = {}
        self.last: dict[str, int] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        now = self.clock()
        if task not in self.started:
            self.started[task] = (now, done)
            self.printed[task] = now
            if self.every is not None and done < total:
                self._print(f"{task}: starting, {done}/{total} samples done")
        if done == total and self.last.get(task) != done:
            self._print(f"{task}: {done}/{total} samples{self._pace(task, done, total, now)}")
        elif self.every is not None and done < total and now - self.printed[task] >= self.every:
            self.printed[task] = now
            self._print(f"{task}: {done}/{total} samples{self._pace(task, done, total, now)}")
        self.last[task] = done

    def _pace(self, task: str, done: int, total: int, now: float) -> str:
        start, first = self.started[task]
        elapsed, count = now - start, done - first
        if count <= 0 or elapsed <= 0:
            return ""
        rate = count / elapsed
        left = "" if done >= total else f", about {_duration((total - done) / rate)} left"
        return f" ({rate:.2f} samples/s, {_duration(elapsed)} elapsed{left})"

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@contextmanager
def progress_bar(disabled: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per task on stderr; without a terminal, periodic progress lines (`ProgressLines`);
    with `disabled`, only a line per finished task. Yields the pipeline's progress callback."""
    if disabled or not sys.stderr.isatty():
        yield ProgressLines(every=None if disabled else PROGRESS_EVERY_S)
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
        rows.append([summary.task, summary.convention, name, value, err, m.n, m.n_unparsed])
    return rows


HEADERS = ["task", "convention", "metric", "value", "stderr", "n", "unparsed"]


def print_run_summary(run: RunDir) -> None:
    rows = []
    for entry in run.log.tasks.values():
        if entry.summary is not None:
            rows += summary_rows(entry.summary, entry.percent)
    print(f"\nrun {run.path} ({run.log.status}; model {run.log.model})\n")
    print(tabulate(rows, headers=HEADERS, tablefmt="github"))
    for task, entry in run.log.tasks.items():
        if entry.baseline is not None and entry.baseline.kind == "oracle":
            print(f"\n{task}: {entry.baseline.detail}")
    print(generation_counts(run))


def generation_counts(run: RunDir) -> str:
    """This invocation's generations: how many the model made and how many came from the response cache."""
    usage = run.log.usage
    if usage is None:
        return "\ngenerations: none recorded"
    if usage.cache is None:
        return (f"\ngenerations this time: {usage.model_calls}, none from the response cache (not used: "
                "--no-cache, or a backend that is never cached)")
    total = usage.model_calls + usage.cache.hits
    return (f"\ngenerations this time: {total} ({usage.cache.hits} from the response cache {usage.cache.path}, "
            f"{usage.model_calls} by the model)")


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
    """Parse each task file and resolve every prompt variant's parser and metrics."""
    from medharness.errors import MedHarnessError
    from medharness.scoring import recipe_for
    from medharness.task import Task, discover_tasks, parse_task_file

    paths = files or list(discover_tasks().values())
    failures = 0
    for path in paths:
        try:
            config = parse_task_file(path)
            task = Task(config, path)
            for variant in config.prompts.variants:
                recipe_for(task, prompt=variant)
            print(f"ok    {path}")
        except MedHarnessError as exc:
            failures += 1
            print(f"FAIL  {exc}" if str(path) in str(exc) else f"FAIL  {path}: {exc}")
    print(f"{len(paths) - failures} valid, {failures} invalid")
    return 1 if failures else 0
