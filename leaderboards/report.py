"""`medharness report RUN_DIR [--ablated RUN_DIR] --output DIR`: one run on one Markdown page, plus PNGs.

Sections: the run (model, lineage, status, usage); the headline table (every metric with its interval, how the
interval was made, unparsed and failed counts); per-group tables with intervals; the unparsed and failed
samples with their raw text; the judges' disagreements and agreement (where the run was judged); and, with
`--ablated`, each metric's paired difference between the run and a run of the same model on ablated images.
Only OUTPUT/report.md and OUTPUT/*.png are written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tabulate import tabulate

from medharness.core.display import md_text, plain
from medharness.core.errors import ConfigError
from medharness.core.records import ResultRow
from medharness.leaderboards.board import build
from medharness.leaderboards.columns import Column
from medharness.leaderboards.render import cell_text
from medharness.leaderboards.runs import lineage_text, model_name
from medharness.leaderboards.samples import RowCache
from medharness.leaderboards.spec import BoardSpec, ColumnSpec
from medharness.leaderboards.table import Board
from medharness.runs.results import metric_value, scale_of
from medharness.runs.runlog import RunDir


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def fenced(text: str) -> str:
    """`text` in a code fence longer than any backtick run inside it (a model's output may contain fences)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _one_line(text: Any, limit: int = 200) -> str:
    """Text from the run (a peer's model name, a label, a sample, an error) on one Markdown line: no control
    character (an ANSI escape), no line break, shown as typed (Markdown and HTML escaped: `md_text`)."""
    text = " ".join(plain(str(text)).split())
    return md_text(text if len(text) <= limit else text[: limit - 1] + "…")


def _code(text: Any) -> str:
    """`text` as inline code: plain, one line, no backtick to end the span early."""
    return "`" + " ".join(plain(str(text)).split()).replace("`", "'") + "`"


def headline(run: RunDir) -> str:
    rows = []
    for task, entry in run.log.tasks.items():
        if entry.summary is None:
            rows.append([task, "", "(not finished)", "", "", "", "", ""])
            continue
        s = entry.summary
        for metric, m in s.metrics.items():
            v = metric_value(entry, metric)
            rows.append([task, s.convention, metric, cell_text(v, 1, True), v.method or "none",
                         str(m.n), str(m.n_unparsed), str(s.n_errors)])
    return _table(rows, ["task", "convention", "metric", "value [95% CI]", "interval", "n", "unparsed",
                         "failed (task)"])


def group_tables(run: RunDir, cache: RowCache, output: Path) -> list[str]:
    """Per task and group field: n, unparsed and every metric with its interval; a PNG of the primary
    metric."""
    parts = []
    for task, entry in run.log.tasks.items():
        if entry.summary is None:
            continue
        metrics = list(entry.summary.metrics)
        for field, groups in entry.summary.groups.items():
            body = []
            for value, g in groups.items():
                cells = [cell_text(Column("", task, m, (field, value)).value(run, cache), 1, True)
                         for m in metrics]
                body.append([_one_line(value), str(g.n), "" if g.n_unparsed is None else str(g.n_unparsed),
                             *cells])
            parts.append(f"### {task} by {field}\n\n" + _table(body, [field, "n", "unparsed", *metrics]))
            spec = BoardSpec(name=re.sub(r"[^A-Za-z0-9._-]+", "-", f"{task}-by-{field}"),
                             title=f"{task} by {field}: {metrics[0]}",
                             columns=[ColumnSpec(task=task, group=field)])
            parts.append(_plot(build(spec, [run.path]), output / f"{spec.name}.png"))
    return parts


def failures(run: RunDir, cache: RowCache, limit: int) -> list[str]:
    parts = []
    for task in run.log.tasks:
        bad = [r for r in cache.rows(run, task) if r.generation.error is not None or not r.answer.parsed]
        if not bad:
            continue
        n_failed = sum(1 for r in bad if r.generation.error is not None)
        head = (f"### {task}: {n_failed} failed, {len(bad) - n_failed} unparsed"
                + (f" (first {limit} listed)" if len(bad) > limit else ""))
        items = [_sample(r) for r in bad[:limit]]
        parts.append("\n\n".join([head, *items]))
    return parts


def _sample(row: ResultRow) -> str:
    what = (f"failed: {row.generation.error}" if row.generation.error
            else f"unparsed: {row.answer.note or 'no answer'}")
    gold = row.sample.target
    return (f"**{_one_line(row.sample.id)}**: {_one_line(what)}\n\n"
            f"- question: {_one_line(row.sample.question)}\n"
            f"- gold: {_one_line(gold)}\n\n" + fenced(plain(row.generation.text[:2000])))


def judge_sections(run: RunDir, cache: RowCache, output: Path, limit: int) -> list[str]:
    from medharness.judges.audit import disagreements, rule_metric

    parts = []
    judged = [t for t in run.log.tasks if run.judgement_file(t).is_file()]
    for task in judged:
        metric = rule_metric(run, task)
        found = disagreements(cache.rows(run, task), run.judgements(task), metric)
        body = [[_one_line(item["row"].sample.id), "; ".join(item["reasons"]),
                 _one_line(item["row"].sample.target, 60),
                 _one_line(item["row"].answer.value if item["row"].answer.parsed else "(unparsed)", 60),
                 ", ".join(f"{j.judge}={'failed' if j.failed else j.value}" for j in item["verdicts"])]
                for item in found[:limit]]
        parts.append(f"### {task}: {len(found)} disagreeing sample(s)"
                     + (f" (first {limit})" if len(found) > limit else "")
                     + ("\n\n" + _table(body, ["sample", "why", "gold", "answer", "verdicts"]) if body
                        else ""))
    if judged:
        try:
            from medharness.judges.audit import agreement_reports
            from medharness.leaderboards.plots import judge_agreement

            reports = agreement_reports(run, judged)
            if any(r.get("pairwise") or r.get("vs_rule") for r in reports):
                judge_agreement(reports, output / "judge-agreement.png")
                parts.append("![judge agreement](judge-agreement.png)")
        except ImportError as exc:
            parts.append(f"(no agreement chart: {exc.name} is not installed; `pip install "
                         "'medharness[judges]'`)")
    return parts


def ablation_deltas(run: RunDir, ablated: RunDir, cache: RowCache) -> str:
    """Per task and metric: the run's value, the ablated run's, and their paired difference on shared
    samples."""
    from medharness.core.stats import paired_compare

    if ablated.log.model != run.log.model:
        raise ConfigError(f"--ablated {ablated.path} is a run of another model ({ablated.log.model}, not "
                          f"{run.log.model}): an ablation compares one model with and without its images")
    rows = []
    for task, entry in run.log.tasks.items():
        other = ablated.log.tasks.get(task)
        if other is None or entry.summary is None or other.summary is None:
            continue
        if not other.ablation:
            raise ConfigError(f"--ablated {ablated.path}: task {task} was not run with --ablate")
        if other.version != entry.version:
            raise ConfigError(f"--ablated {ablated.path}: task {task} is version {other.version}, the run's "
                              f"is {entry.version}: not comparable")
        for metric in entry.summary.metrics:
            a = cache.scores(run, task, metric)
            b = cache.scores(ablated, task, metric)
            shared = sorted(set(a.values) & set(b.values))
            scale = scale_of(entry, metric)
            if len(shared) < 2:
                continue
            p = paired_compare({i: b.values[i] for i in shared}, {i: a.values[i] for i in shared},
                               {i: a.clusters[i] for i in shared})
            rows.append([task, metric, other.ablation, f"{metric_value(entry, metric).value:.1f}",
                         f"{metric_value(other, metric).value or float('nan'):.1f}",
                         f"{p.diff * scale:+.1f} [{p.low * scale:+.1f}, {p.high * scale:+.1f}]", p.test,
                         "n/a" if p.p_value is None else f"{p.p_value:.3g}", str(p.n)])
    return _table(rows, ["task", "metric", "ablation", "run", "ablated", "run − ablated [95% CI]", "test",
                         "p", "n paired"])


def write_report(run_dir: Path, output: Path, ablated: Path | None = None, max_samples: int = 20) -> Path:
    if max_samples < 0:
        raise ConfigError("--max-samples must be 0 or more")
    run = RunDir.open(run_dir)
    other = RunDir.open(ablated) if ablated is not None else None
    output.mkdir(parents=True, exist_ok=True)
    cache = RowCache()
    log = run.log
    parts = [f"# Run report: {_one_line(log.display_name)}",
             f"- run directory: {_code(run.path)}\n"
             f"- model: {_one_line(model_name(log))} ({_code(log.model)})\n"
             f"- lineage: {_one_line(lineage_text(log))}\n- status: {log.status}"
             + (f" ({_one_line(log.error, 2000)})" if log.error else "")
             + f"\n- created: {log.created}; medharness {log.versions.get('medharness', '?')}"]
    if log.usage is not None:
        cache_hits = f", {log.usage.cache.hits} from the cache" if log.usage.cache else ""
        parts[-1] += (f"\n- model calls: {log.usage.model_calls}{cache_hits}; generation time "
                      f"{log.usage.generate_s:.1f} s")
    parts += ["## Headline", headline(run), _headline_plot(run, output)]
    groups = group_tables(run, cache, output)
    if groups:
        parts += ["## By group", *groups]
    parts.append("## Unparsed and failed samples")
    parts += (failures(run, cache, max_samples)
              or ["None: every answer parsed and every generation succeeded."])
    judges = judge_sections(run, cache, output, max_samples)
    if judges:
        parts += ["## Judges", *judges]
    if other is not None:
        parts += [f"## Ablation: {_one_line(other.log.display_name)}", ablation_deltas(run, other, cache),
                  "A large drop says the model uses the picture; none says it answers from the text alone."]
    parts.append("Intervals: 95%; the method of each is named in its row (Wilson for 0/1 scores on "
                 "independent samples, a percentile bootstrap clustered by image otherwise; normal = 1.96 x "
                 "standard error for run logs written before intervals were recorded). Differences: paired "
                 "on the samples both runs scored (exact or clustered McNemar for 0/1 metrics, paired t on "
                 "cluster totals otherwise).")
    path = output / "report.md"
    path.write_text("\n\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return path


def _headline_plot(run: RunDir, output: Path) -> str:
    name = " ".join(plain(run.log.display_name).split())
    board = build(BoardSpec(name="headline", title=f"{name}: primary metrics", judges=False),
                  [run.path])
    return _plot(board, output / "headline.png")


def _plot(board: Board, path: Path) -> str:
    """Bars of the board into `path`, and the Markdown image link (a note where matplotlib is absent)."""
    try:
        from medharness.leaderboards.plots import bars

        bars(board, path)
    except ConfigError as exc:
        return f"(no plot: {exc})"
    return f"![{md_text(board.spec.title or board.spec.name)}]({path.name})"
