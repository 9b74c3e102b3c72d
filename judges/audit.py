"""Auditing a judged run: agreement reports (`medharness agreement`) and the disagreement file.

Both read only the run directory (samples + judgements), never a model. The agreement report compares,
per task and judge spec, the judges with each other, with the task's primary rule-based metric (when its
values lie in the spec's verdict set, e.g. exact match against a 0/1 verdict), and with human labels.

Human labels: a CSV or JSONL file with `id` (or `sample_id`), `label` (a number in the spec's verdict set,
or yes/no/true/false) and optionally `task` (needed when sample ids repeat across tasks).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from medharness.core.datafiles import read_records
from medharness.core.errors import DataError
from medharness.core.records import Judgement, ResultRow
from medharness.judges.specs import get_spec
from medharness.judges.summary import latest, verdict_frame
from medharness.runs.runlog import RunDir

_WORDS = {"yes": 1.0, "no": 0.0, "true": 1.0, "false": 0.0}


def read_human_labels(path: Path) -> pd.DataFrame:
    """-> DataFrame with columns task (may be None), id, label (float)."""
    records = read_records(path, "jsonl" if path.suffix == ".jsonl" else "csv", what="human labels file")
    frame = pd.DataFrame([r.data for r in records])
    if "id" not in frame.columns and "sample_id" in frame.columns:
        frame = frame.rename(columns={"sample_id": "id"})
    missing = {"id", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"human labels {path}: missing column(s) {sorted(missing)} (need id and label)")

    def number(value: Any, where: str) -> float:
        text = str(value).strip().lower()
        if text in _WORDS:
            return _WORDS[text]
        try:
            return float(text)
        except ValueError:
            raise DataError(f"human labels {where}: label {value!r} is not a number or yes/no") from None

    for value, record in zip(frame["id"], records, strict=True):
        if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
            raise DataError(f"human labels {record.where}: the id is empty")
    frame["label"] = [number(v, r.where) for v, r in zip(frame["label"], records, strict=True)]
    frame["id"] = frame["id"].astype(str)
    if "task" not in frame.columns:
        frame["task"] = None
    return frame[["task", "id", "label"]]


def rule_metric(run: RunDir, task: str) -> str | None:
    """The task's primary rule-based metric (the first in its summary)."""
    entry = run.log.tasks.get(task)
    return entry.summary.primary if entry and entry.summary else None


def agreement_reports(run: RunDir, tasks: list[str] | None = None, field: str | None = None,
                      human: Path | None = None, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One report per (task, spec) with judgements; the shape of `medharness.judges.agreement.to_json`."""
    from medharness.judges.agreement import agreement_with, pairwise_agreement, panel_agreement

    labels = read_human_labels(human) if human else None
    reports = []
    for task in tasks or run.tasks():
        rows = {r.sample_id: r for r in run.rows(task)}
        for spec_name, ratings in verdict_frame(run.judgements(task), field).items():
            spec = get_spec(spec_name)
            name = field or spec.primary
            ratings = ratings[ratings.index.isin(list(rows))]
            report: dict[str, Any] = {"task": task, "spec": spec_name, "field": name, "scale": spec.scale,
                                      "judges": list(ratings.columns), "n_samples": len(rows), "notes": []}
            kw: dict[str, Any] = {"scale": spec.scale, "levels": spec.levels, "n_boot": n_boot, "seed": seed}
            if ratings.shape[1] >= 2:
                report["panel"] = panel_agreement(ratings, **kw)
                report["pairwise"] = pairwise_agreement(ratings, **kw)
            else:
                report["notes"].append("one judge only: no agreement among judges")
            metric = rule_metric(run, task)
            rule = pd.Series({sid: r.scores.get(metric, math.nan) for sid, r in rows.items()}, dtype=float,
                             name=f"rule:{metric}") if metric else None
            if rule is not None and set(rule.dropna().unique()) <= set(spec.levels):
                report["vs_rule"] = agreement_with(ratings, rule, **kw)
            elif metric:
                report["notes"].append(f"rule metric {metric} takes values outside {spec_name}'s verdicts: "
                                       "not compared")
            if labels is not None:
                mine = labels[(labels["task"].isna()) | (labels["task"] == task)]
                reference = pd.Series(dict(zip(mine["id"], mine["label"], strict=True)),
                                      dtype=float, name="human")
                reference = reference[reference.index.isin(list(rows))]
                outside = set(reference.dropna().unique()) - set(spec.levels)
                if outside:
                    raise DataError(f"human labels for {task}: values {sorted(float(v) for v in outside)} "
                                    f"are not {spec_name} verdicts {list(spec.levels)}")
                report["n_human"] = int(reference.notna().sum())
                report["vs_human"] = agreement_with(ratings, reference, **kw, with_icc=True)
            reports.append(report)
    if not reports:
        raise DataError(f"{run.path}: no judgements yet; run `medharness judge {run.path} --judges ...` "
                        "first")
    return reports


# ------------------------------------------------------------------------------------------ disagreements
def _fence(text: str) -> str:
    longest = max((len(run) for run in text.split("\n") for run in _backtick_runs(run)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _backtick_runs(line: str) -> list[str]:
    runs, current = [], ""
    for ch in line:
        if ch == "`":
            current += ch
        elif current:
            runs.append(current)
            current = ""
    return runs + ([current] if current else [])


def _cell(text: str | None, limit: int = 300) -> str:
    text = (text or "").replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verdict(j: Judgement) -> str:
    if j.failed:
        return "**failed**"
    if j.value is None:
        return "skipped"
    return ", ".join(f"{k}={v:g}" for k, v in j.values.items())


def disagreements(rows: list[ResultRow], judgements: list[Judgement],
                  metric: str | None) -> list[dict[str, Any]]:
    """Samples where judges of one spec disagree, or a binary judge disagrees with a 0/1 rule metric."""
    final = latest(judgements)
    by_sample: dict[str, list[Judgement]] = {}
    for (sid, _), j in sorted(final.items()):
        by_sample.setdefault(sid, []).append(j)
    out = []
    for row in rows:
        verdicts = by_sample.get(row.sample_id, [])
        rule = row.scores.get(metric) if metric else None
        reasons = []
        for spec in sorted({j.spec for j in verdicts}):
            values = {j.value for j in verdicts if j.spec == spec and j.value is not None}
            if len(values) > 1:
                reasons.append(f"{spec} judges disagree")
            if rule in (0.0, 1.0) and get_spec(spec).scale == "binary" and values - {rule}:
                reasons.append(f"{spec} vs {metric}")
        if reasons:
            out.append({"row": row, "verdicts": verdicts, "rule": rule, "reasons": reasons})
    return out


def write_disagreements(run: RunDir, tasks: list[str] | None = None, limit: int = 200) -> tuple[Path, int]:
    """`judgements/disagreements.md`: per task, the disagreeing samples with question, gold, prediction and
    every verdict (at most `limit` per task). Returns the path and the number of samples listed."""
    parts = [f"# Disagreements: {run.path.name}", ("Samples where judges of one spec disagree with each "
             "other, or a 0/1 judge disagrees with the task's rule-based metric. Newest verdict per judge.")]
    total = 0
    for task in tasks or run.tasks():
        judgements = run.judgements(task)
        if not judgements:
            continue
        metric = rule_metric(run, task)
        found = disagreements(run.rows(task), judgements, metric)
        total += len(found)
        parts.append(f"## {task}: {len(found)} sample(s)" + (f" (first {limit} listed)"
                                                             if len(found) > limit else ""))
        for item in found[:limit]:
            row: ResultRow = item["row"]
            parts.append(f"### {task} / {row.sample_id}: {'; '.join(item['reasons'])}")
            gold = row.sample.target if isinstance(row.sample.target, str) else json.dumps(row.sample.target)
            rule = "unscored" if item["rule"] is None or item["rule"] != item["rule"] else f"{item['rule']:g}"
            parts.append(f"- question: {_cell(row.sample.question, 600)}\n- gold: {_cell(gold, 600)}\n"
                         "- parsed answer: "
                         f"{_cell(str(row.answer.value) if row.answer.parsed else '(unparsed)')}\n"
                         f"- rule ({metric}): {rule}")
            parts.append(_fence(row.generation.text[:2000]
                                + ("…" if len(row.generation.text) > 2000 else "")))
            table = ["| judge | spec | verdict | rationale / note |", "|---|---|---|---|"]
            table += [f"| {j.judge} | {j.spec} | {_verdict(j)} | {_cell(j.rationale or j.note)} |"
                      for j in item["verdicts"]]
            parts.append("\n".join(table))
    path = run.path / "judgements" / "disagreements.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path, total
