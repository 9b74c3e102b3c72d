"""The regression gate: is a candidate worse than a baseline on the same items, beyond a tolerance and beyond
chance? (docs/regression-gate.md)

Each side is a run directory or a gate summary file (`write_summary`): per task, the version, convention,
cluster unit and each sample's metric values, without the rows' text. A task fails when its primary metric
(or `--metric`) is worse by more than `max_drop` points AND the paired test
(medharness.core.stats.paired_compare, Holm-corrected across the tasks gated together) rejects "no difference"
at `alpha`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from medharness.core import stats
from medharness.core.datafiles import parse_json, read_text
from medharness.core.errors import DataError
from medharness.core.records import Record
from medharness.runs.runlog import RunDir
from medharness.scoring.recipe import cluster_of

FORMAT: Literal["medharness-gate-summary"] = "medharness-gate-summary"
Verdict = Literal["worse", "within tolerance", "no change", "better", "incomparable", "not gated"]


class MetricInfo(Record):
    higher_is_better: bool = True
    percent: bool = True  # shown x100: the tolerance is in these points; a per-sample value is in [0, 1]
    metric: str | None = None  # its registered name (the direction is the registration's, not the file's)


Finite = Annotated[float, Field(allow_inf_nan=False)]


class ScoredSample(Record):
    cluster: str
    scores: dict[str, Finite]


class GateTask(Record):
    task_version: str
    convention: str
    cluster_by: str
    metrics: dict[str, MetricInfo]  # in the task's order: the first with per-sample values is the primary
    samples: dict[str, ScoredSample]


class GateSummary(Record):
    """What a gate compares: one run's per-sample metric values (a committed baseline, or read from a run)."""

    format: Literal["medharness-gate-summary"] = FORMAT
    version: int = 1
    source: str  # the run id it was made from
    model: str | None = None
    tasks: dict[str, GateTask] = Field(default_factory=dict)


def summary_of_run(run_dir: Path) -> GateSummary:
    run = RunDir.open(run_dir)
    tasks = {}
    for name in run.tasks():
        entry = run.log.tasks.get(name)
        if entry is None or entry.summary is None:
            raise DataError(f"{run_dir}: task {name} has no summary (did the run finish?)")
        rows = run.rows(name)
        if versions := sorted({r.task_version for r in rows} - {entry.version}):
            raise DataError(f"{run_dir}: task {name} mixes rows of versions {versions} with {entry.version}")
        cluster_by = entry.cluster_by or "image"
        percent = {m.label: m.percent for m in entry.metrics} or entry.percent
        names = {m.label: m.name for m in entry.metrics}
        metrics = {label: MetricInfo(higher_is_better=m.higher_is_better, percent=percent.get(label, True),
                                     metric=names.get(label))
                   for label, m in entry.summary.metrics.items()}
        samples = {r.sample_id: ScoredSample(cluster=cluster_of(r.sample, cluster_by),
                                             scores={k: v for k, v in r.scores.items() if not math.isnan(v)})
                   for r in rows}
        tasks[name] = GateTask(task_version=entry.version, convention=entry.convention, cluster_by=cluster_by,
                               metrics=metrics, samples=samples)
    if not tasks:
        raise DataError(f"{run_dir}: no scored tasks")
    try:
        return GateSummary(source=run.log.run_id, model=run.log.model, tasks=tasks)
    except ValidationError as exc:  # a metric that scored a sample inf
        raise DataError(f"{run_dir}: {_first_error(exc)}") from None


def load_side(path: Path) -> GateSummary:
    """A run directory, or a summary file written by `write_summary`."""
    if path.is_dir():
        return summary_of_run(path)
    if not path.is_file():
        raise DataError(f"{path}: neither a run directory nor a gate summary file")
    try:
        summary = GateSummary.model_validate(parse_json(path, read_text(path, "gate summary")))
    except ValidationError as exc:
        raise DataError(f"{path}: not a gate summary ({_first_error(exc)})") from None
    if not summary.tasks:
        raise DataError(f"{path}: a gate summary with no task: nothing to gate")
    return summary


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or '(top level)'}: {first['msg']}"


def write_summary(run_dir: Path, output: Path) -> GateSummary:
    summary = summary_of_run(run_dir)
    output.write_text(json.dumps(summary.model_dump(), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return summary


@dataclass(frozen=True)
class TaskVerdict:
    task: str
    verdict: Verdict
    reason: str = ""
    metric: str | None = None
    scale: float = 100.0
    higher_is_better: bool = True
    paired: stats.Paired | None = None
    p_holm: float | None = None
    drop: float | None = None  # points lost (display scale); negative = better


@dataclass(frozen=True)
class GateResult:
    tasks: list[TaskVerdict]
    max_drop: float
    alpha: float

    @property
    def exit_code(self) -> int:
        verdicts = {t.verdict for t in self.tasks}
        if "incomparable" in verdicts or not verdicts - {"not gated"}:  # nothing compared is no pass
            return 2
        return 1 if "worse" in verdicts else 0

    @property
    def verdict(self) -> str:
        return {0: "pass", 1: "fail", 2: "incomparable"}[self.exit_code]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "max_drop": self.max_drop,
                "alpha": self.alpha, "tasks": [asdict(t) for t in self.tasks]}


def _pair(task: str, base: GateTask, cand: GateTask, metric: str | None) -> TaskVerdict | tuple[str, Any]:
    """A verdict when the task cannot be compared, else (metric label, Paired)."""
    def refuse(reason: str) -> TaskVerdict:
        return TaskVerdict(task, "incomparable", reason, metric)

    if base.task_version != cand.task_version:
        return refuse(f"task versions differ: baseline {base.task_version}, candidate {cand.task_version}")
    if base.convention != cand.convention:
        return refuse(f"conventions differ: baseline {base.convention}, candidate {cand.convention}")
    per_sample = [m for m in base.metrics if any(m in s.scores for s in base.samples.values())]
    label = metric or (per_sample[0] if per_sample else None)
    if label is None or label not in per_sample:
        known = ", ".join(per_sample) or "none"
        return refuse(f"no per-sample values of metric {label} in the baseline (per-sample metrics: {known})")
    a = {i: s.scores[label] for i, s in base.samples.items() if label in s.scores}
    b = {i: s.scores[label] for i, s in cand.samples.items() if label in s.scores}
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        return refuse(f"different items: {len(only_a)} scored only in the baseline (e.g. {only_a[:3]}), "
                      f"{len(only_b)} only in the candidate (e.g. {only_b[:3]})")
    problem = _info_problem(label, base.metrics[label], cand.metrics.get(label))
    if problem is None:
        info = base.metrics[label]
        outside = [i for i, v in (*a.items(), *b.items()) if info.percent and not 0 <= v <= 1]
        if outside:
            problem = (f"{len(outside)} per-sample value(s) of the rate {label} outside [0, 1] (e.g. "
                       f"{outside[0]})")
    if problem is not None:
        return refuse(problem)
    clusters = {i: base.samples[i].cluster for i in a}
    return label, stats.paired_compare(a, b, clusters)


def _info_problem(label: str, base: MetricInfo, cand: MetricInfo | None) -> str | None:
    """Why the two sides' descriptions of a metric cannot be trusted, or None: they disagree on its direction
    or scale, or a side's direction is not its registration's (a summary file is only a file)."""
    if cand is not None and (base.higher_is_better, base.percent) != (cand.higher_is_better, cand.percent):
        return (f"{label}: the sides disagree on its direction or scale (baseline higher_is_better="
                f"{base.higher_is_better}, percent={base.percent}; candidate {cand.higher_is_better}, "
                f"{cand.percent})")
    from medharness.scoring.metrics import METRICS

    for side, info in (("baseline", base), ("candidate", cand)):
        name = info.metric if info is not None else None
        if info is not None and name and name in METRICS and \
                METRICS.get(name).higher_is_better != info.higher_is_better:
            return (f"{label}: the {side} says higher_is_better={info.higher_is_better}, but metric {name} "
                    f"is registered with {METRICS.get(name).higher_is_better}")
    return None


def compare(baseline: GateSummary, candidate: GateSummary, metric: str | None = None, max_drop: float = 1.0,
            alpha: float = 0.05) -> GateResult:
    if not (math.isfinite(max_drop) and max_drop >= 0) or not 0 < alpha < 1:
        raise DataError(f"need a finite --max-drop >= 0 and 0 < --alpha < 1, got {max_drop} and {alpha}")
    out: list[TaskVerdict] = []
    pending: list[tuple[str, str, stats.Paired, MetricInfo]] = []
    for task in sorted(set(baseline.tasks) | set(candidate.tasks)):
        if task not in candidate.tasks:
            out.append(TaskVerdict(task, "incomparable", "in the baseline but not in the candidate", metric))
        elif task not in baseline.tasks:
            out.append(TaskVerdict(task, "not gated", "no baseline for this task", metric))
        else:
            got = _pair(task, baseline.tasks[task], candidate.tasks[task], metric)
            if isinstance(got, TaskVerdict):
                out.append(got)
            else:
                label, paired = got
                pending.append((task, label, paired, baseline.tasks[task].metrics[label]))
    adjusted = stats.holm([p.p_value if p.p_value is not None else 1.0 for _, _, p, _ in pending])
    for (task, label, paired, info), p_holm in zip(pending, adjusted, strict=True):
        scale = 100.0 if info.percent else 1.0
        drop = (-paired.diff if info.higher_is_better else paired.diff) * scale
        significant = paired.p_value is not None and p_holm < alpha
        verdict: Verdict = ("worse" if drop > max_drop and significant
                            else "better" if drop < 0 and significant
                            else "within tolerance" if drop > 0 else "no change")
        out.append(TaskVerdict(task, verdict, "", label, scale, info.higher_is_better, paired, p_holm, drop))
    return GateResult(sorted(out, key=lambda t: t.task), max_drop, alpha)
