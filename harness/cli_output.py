"""What the CLI shows: progress bars, summary tables, listings, validation reports."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from medharness.core.display import plain
from medharness.core.records import MetricSummary, TaskSummary
from medharness.runs.runlog import RunDir, json_safe

PROGRESS_EVERY_S = 30.0  # without a terminal: one progress line per task at most this often


class ProgressLines:
    """Progress as plain lines, for a log file, CI or nohup (no terminal to draw a bar on): a line when a task
    starts, then at most one every `every` seconds while it runs (done/total, rate, time left), and one when
    it ends. `every=None`: the end line only (`--no-progress`). `clock` is injectable for tests."""

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


if TYPE_CHECKING:
    from medharness.runs.gate import GateResult


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


def _scaled(value: float | None, scale: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * scale:.2f}"


def interval_text(m: MetricSummary, scale: float) -> str:
    """"[low, high]" on the metric's display scale; "n/a" where the run log has no interval."""
    if m.ci_low is None or m.ci_high is None:
        return "n/a"
    return f"[{m.ci_low * scale:.2f}, {m.ci_high * scale:.2f}]"


def summary_rows(summary: TaskSummary, percent: dict[str, bool]) -> list[list[object]]:
    rows: list[list[object]] = []
    for name, m in summary.metrics.items():
        scale = 100.0 if percent.get(name, True) else 1.0
        rows.append([summary.task, summary.convention, name, _scaled(m.value, scale), interval_text(m, scale),
                     m.ci_method or "", m.n_clusters if m.n_clusters is not None else "", m.n,
                     (m.n_unparsed or 0) - m.n_errors, m.n_errors, _coverage(summary)])
    return rows


HEADERS = ["task", "convention", "metric", "value", "95% CI", "CI method", "clusters", "n", "unparsed",
           "gen errors", "samples"]


def group_table(summary: TaskSummary, field: str, percent: dict[str, bool]) -> str:
    """One group_by field as a table: n, unparsed, and each metric as value [95% CI] on the headline's
    scale."""
    names = list(summary.metrics)
    table = []
    for value, g in summary.groups[field].items():
        cells = []
        for name in names:
            scale = 100.0 if percent.get(name, True) else 1.0
            m = g.metrics.get(name)
            cells.append("n/a" if m is None else f"{_scaled(m.value, scale)} {interval_text(m, scale)}")
        table.append([value, g.n, "" if g.n_unparsed is None else g.n_unparsed, *cells])
    return tabulate(table, headers=[field, "n", "unparsed", *names], tablefmt="github", disable_numparse=True)


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
            notes.append(f"{s.task}: {s.n_errors} of {s.n} generations failed (no answer from the model; "
                         "zero credit, counted under 'gen errors', apart from answers the parser could not "
                         "read)")
        if s.n_expected is not None and s.n < s.n_expected:
            notes.append(f"{s.task}: only {s.n} of its {s.n_expected} samples were scored: a partial result")
    return notes


def print_run_summary(run: RunDir) -> None:
    rows = []
    summaries = [e.summary for e in run.log.tasks.values() if e.summary is not None]
    for entry in run.log.tasks.values():
        if entry.summary is not None:
            rows += summary_rows(entry.summary, entry.percent)
    print(f"\nrun {run.path} ({run.log.status}; model {plain(str(run.log.model))})\n")
    print(tabulate(rows, headers=HEADERS, tablefmt="github", disable_numparse=True))
    for note in coverage_notes(summaries):
        print(f"note: {note}")
    for task, entry in run.log.tasks.items():
        summary = entry.summary
        if summary is not None:
            for field in summary.groups:
                print(f"\n{task} by {field}:\n" + group_table(summary, field, entry.percent))
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
    return (f"\ngenerations this time: {total} ({usage.cache.hits} from the response cache "
            f"{usage.cache.path}, {usage.model_calls} by the model)")


def _percent_of(summary: TaskSummary) -> dict[str, bool]:
    from medharness.scoring.metrics import METRICS

    out = {}
    for label in summary.metrics:
        out[label] = METRICS.get(label).percent if label in METRICS else True
    return out


def print_summaries(summaries: list[TaskSummary], as_json: bool = False) -> None:
    if as_json:
        data = [s.to_score_json(_percent_of(s)) for s in summaries]
        print(json.dumps(json_safe(data[0] if len(data) == 1 else data), indent=2))
        return
    for s in summaries:
        percent = _percent_of(s)
        print(tabulate(summary_rows(s, percent), headers=HEADERS, tablefmt="github", disable_numparse=True))
        for field in s.groups:
            print(f"\nby {field}:\n" + group_table(s, field, percent))
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
                     use.cache_hits, use.prompt_tokens, use.completion_tokens,
                     "" if cost is None else f"{cost:.4f}"])
    print("\njudges (this pass):\n" + tabulate(rows, headers=[
        "judge", "spec", "judged", "failed", "skipped", "calls", "cache hits", "prompt tok", "completion tok",
        "run cost USD"], tablefmt="github"))
    table = []
    for task, entry in run.log.tasks.items():
        for column, c in (entry.judges.columns if entry.judges else {}).items():
            scale = 100.0 if c.percent else 1.0
            value = "n/a" if c.value is None else f"{c.value * scale:.2f}"
            ci = ("n/a" if c.ci_low is None or c.ci_high is None
                  else f"[{c.ci_low * scale:.2f}, {c.ci_high * scale:.2f}]")
            table.append([task, column, value, ci, c.ci_method or "", c.n, c.n_unscored, c.n_failed])
    print("\n" + tabulate(table, headers=["task", "column", "value", "95% CI", "CI method", "n scored",
                                          "unscored", "judge failed"],
                          tablefmt="github", disable_numparse=True))
    print(f"\n{n_disagreements} disagreeing sample(s): {disagreements}")


def validate_files(files: list[Path]) -> int:
    """Check each task file as `run` would without data: the schema (names, generation settings, templates,
    group_by and placeholders against the sources' fields, parser and metric arguments), every prompt
    variant's scoring recipe and knowledge file."""
    from medharness.core.errors import MedHarnessError
    from medharness.scoring.knowledge import read_knowledge
    from medharness.taskfiles.task import Task, discover_tasks, parse_task_file, recipe_for

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


def gate_markdown(result: GateResult, baseline: str, candidate: str) -> str:
    """The gate's verdict as Markdown: a headline, one row per task, and the reasons for refusals."""
    worse = [t.task for t in result.tasks if t.verdict == "worse"]
    refused = [t for t in result.tasks if t.verdict == "incomparable"]
    gated = sum(t.paired is not None for t in result.tasks)
    head = {"pass": "PASS", "fail": f"FAIL ({len(worse)} of {gated} task(s) worse)",
            "incomparable": f"INCOMPARABLE ({len(refused)} task(s) cannot be compared)"}[result.verdict]
    lines = [f"## medharness gate: {head}", "",
             (f"baseline `{baseline}`, candidate `{candidate}`; fails when worse by more than "
             f"{result.max_drop:g} point(s) and the paired test gives p < {result.alpha:g} (Holm-corrected "
             f"across {gated} task(s))."),
             ""]
    rows = []
    for t in result.tasks:
        p = t.paired
        if p is None:
            rows.append([t.task, t.metric or "", "", "", "", "", "", "", "", t.verdict])
            continue
        s = t.scale
        rows.append([t.task, t.metric or "", f"{p.n} ({p.n_clusters})", f"{p.mean_a * s:.2f}",
                     f"{p.mean_b * s:.2f}", f"{p.diff * s:+.2f} [{p.low * s:+.2f}, {p.high * s:+.2f}]",
                     p.test, "n/a" if p.p_value is None else f"{p.p_value:.3g}",
                     "n/a" if t.p_holm is None else f"{t.p_holm:.3g}",
                     f"**{t.verdict}**" if t.verdict == "worse"
                     else t.verdict])
    lines.append(tabulate(rows, headers=["task", "metric", "n (clusters)", "baseline", "candidate",
                                         "candidate - baseline [95% CI]", "test", "p", "p (Holm)", "verdict"],
                          tablefmt="github"))
    notes = [f"- {t.task}: {t.verdict}: {t.reason}" for t in result.tasks if t.reason]
    return "\n".join(lines + ([""] + notes if notes else []))
