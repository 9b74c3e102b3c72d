"""`medharness run --tasks lm_eval:medqa_4options,...`: lm-eval's own tasks on the same checkpoint, run by
lm-eval as a library, landed in the same run directory (a VLM's text-only medical knowledge, beside its image
tasks).

The checkpoint is loaded once with transformers (a VLM as image-text-to-text, its text path used: lm-eval's
`hf` loader only knows causal LMs) and handed to lm-eval's `HFLM`. lm-eval scores (its metric, its filters);
each of its tasks becomes a task `lm_eval.<name>` of the run: one row per doc (the prompt, the generated text
or the chosen choice, lm-eval's per-doc metrics) and a summary of lm-eval's aggregates with its standard
errors. The run log marks them `scored_by: lm-eval` (re-scoring leaves them as they are); lm-eval's own files
are kept in `RUN_DIR/lm_eval/`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from medharness.core.errors import ConfigError, DataError
from medharness.core.records import (
    Answer,
    Generation,
    MetricSpecRecord,
    MetricSummary,
    PeerOrigin,
    ResultRow,
    Sample,
    TaskEntry,
    TaskSummary,
)
from medharness.runs.runlog import RunDir

PREFIX = "lm_eval:"


def split_tasks(spec: str) -> tuple[str, list[str]]:
    """`--tasks` -> (medharness tasks as a comma list, lm-eval task names)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    theirs = [p.removeprefix(PREFIX) for p in parts if p.startswith(PREFIX)]
    if any(not name for name in theirs):
        raise ConfigError(f"--tasks {spec!r}: `{PREFIX}` needs an lm-eval task name, e.g. "
                          "lm_eval:medqa_4options")
    if theirs and importlib.util.find_spec("lm_eval") is None:
        raise ConfigError(f"--tasks {PREFIX}...: lm-eval is not installed (the `peers` extra)")
    return ",".join(p for p in parts if not p.startswith(PREFIX)), theirs


def run_name(task: str) -> str:
    return f"lm_eval.{task}"


def _load_lm(model: str, device: str | None, dtype: str | None, batch_size: int) -> Any:
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    torch_dtype = getattr(torch, dtype) if dtype and dtype != "auto" else "auto"
    try:
        net = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
    except ValueError:  # a VLM: its language model answers the text prompts
        net = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype)
    device = device if device and device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    net = torch.nn.Module.to(net, device).eval()
    return HFLM(pretrained=net, tokenizer=AutoTokenizer.from_pretrained(model), backend="causal",
                batch_size=batch_size, device=device)


def _text(record: dict[str, Any], output_type: str) -> tuple[str, Any]:
    """(generation text, answer value): the generated text, or the choice with the highest log-likelihood."""
    if output_type == "multiple_choice":
        scores = [float(r[0]) for r in record["filtered_resps"]]
        best = max(range(len(scores)), key=scores.__getitem__)
        choices = [str(a[1]) for a in record["arguments"]]
        return choices[best].strip(), best
    resps = record["resps"]
    text = resps[0][0] if resps and isinstance(resps[0], list) else str(resps[0] if resps else "")
    return str(text), str(record["filtered_resps"][0]) if record.get("filtered_resps") else str(text)


def _rows(name: str, version: str, output_type: str, fingerprint: str, samples: list[dict[str, Any]]
          ) -> list[ResultRow]:
    rows = []
    for record in samples:
        args = record["arguments"]
        question = str(args[0][0]) if args and isinstance(args[0], (list, tuple)) else str(args)
        text, value = _text(record, output_type)
        choices = tuple(str(a[1]).strip() for a in args) if output_type == "multiple_choice" else ()
        sample = Sample(id=str(record["doc_id"]), task=name, question=question, target=record["target"],
                        choices=choices, meta={"lm_eval_doc_id": record["doc_id"]})
        scores = {m: float(record[m]) for m in record.get("metrics", [])
                  if isinstance(record.get(m), (int, float))}
        rows.append(ResultRow(task=name, task_version=version, sample=sample,
                              prompt_hash=str(record["prompt_hash"]),
                              generation=Generation(sample_id=sample.id, text=text, model=fingerprint),
                              answer=Answer(value=value, parser="lm-eval"), scores=scores))
    return rows


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _summary(name: str, version: str, aggregate: dict[str, Any], better: dict[str, bool], n: int
             ) -> tuple[TaskSummary, list[MetricSpecRecord], dict[str, bool]]:
    metrics, records, percent = {}, [], {}
    for key, value in aggregate.items():
        metric, _, filter_key = key.partition(",")
        if not filter_key or metric.endswith("_stderr") or _number(value) is None:
            continue
        label = metric if filter_key == "none" else f"{metric},{filter_key}"
        stderr = _number(aggregate.get(f"{metric}_stderr,{filter_key}"))
        higher = better.get(metric, True)
        metrics[label] = MetricSummary(value=float(value), stderr=stderr, n=n, n_unparsed=0,
                                       higher_is_better=higher)
        records.append(MetricSpecRecord(label=label, name=f"lm-eval:{metric}", higher_is_better=higher))
        percent[label] = higher and 0.0 <= float(value) <= 1.0  # accuracies as %, perplexities as they are
    return (TaskSummary(task=name, task_version=version, convention="lm-eval", n=n, n_unparsed=0,
                        metrics=metrics),
            records, percent)


def run_lm_eval_tasks(run: RunDir, model: str, tasks: list[str], *, include_path: str | None = None,
                      limit: int | None = None, batch_size: int = 8, device: str | None = None,
                      dtype: str | None = None, seed: int = 0) -> list[str]:
    """Run lm-eval's `tasks` on the checkpoint `model` into `run` (locked by the caller); tasks already
    finished in the run are skipped (`--resume`). Returns the run's task names written."""
    todo = [t for t in tasks if (e := run.log.tasks.get(run_name(t))) is None or e.summary is None]
    if not todo:
        return []
    try:
        import lm_eval
        from lm_eval.loggers import EvaluationTracker
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise ConfigError(f"lm_eval: tasks need lm-eval (the `peers` extra): {exc}") from None
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in todo if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"lm-eval has no task {', '.join(map(repr, unknown))}" +
                          ("" if include_path else " (a local task folder: --lm-eval-include-path DIR)"))
    tracker = EvaluationTracker(output_path=str(run.path / "lm_eval"))
    results = lm_eval.simple_evaluate(model=_load_lm(model, device, dtype, batch_size), tasks=todo,
                                      task_manager=manager, log_samples=True, limit=limit,
                                      evaluation_tracker=tracker, random_seed=seed, numpy_random_seed=seed,
                                      torch_random_seed=seed, fewshot_random_seed=seed)
    if results is None:
        raise DataError("lm-eval returned no results")
    tracker.save_results_aggregated(results=results, samples=results["samples"])
    version = lm_eval.__version__ if hasattr(lm_eval, "__version__") else None
    fingerprint = f"lm-eval{'==' + version if version else ''}:{model}"
    written = []
    for task, samples in results["samples"].items():
        name = run_name(task)
        task_version = str(results["versions"].get(task, ""))
        output_type = str(results["configs"][task].get("output_type", ""))
        rows = _rows(name, task_version, output_type, fingerprint, samples)
        tracker.save_results_samples(task_name=task, samples=samples)  # (it rewrites `arguments` in place)
        summary, records, percent = _summary(name, task_version, results["results"][task],
                                             results.get("higher_is_better", {}).get(task, {}), len(rows))
        (file,) = sorted((run.path / "lm_eval").glob(f"*/samples_{task}_*.jsonl"), key=os.path.getmtime)[-1:]
        origin = PeerOrigin(tool="lm-eval", tool_version=version, file=str(file),
                            sha256=hashlib.sha256(Path(file).read_bytes()).hexdigest(), model=model,
                            id_mapping="doc_id", n_rows=len(rows), n_matched=len(rows), n_unmatched=0,
                            n_task_samples=len(rows), scored_by="lm-eval")
        run.drop_rows(name, lambda row: True)  # a task re-run after an interruption starts clean
        run.set_task(name, TaskEntry(version=task_version, convention="lm-eval", parser="lm-eval",
                                     n_selected=len(rows), percent=percent, metrics=records, origin=origin,
                                     data={"lm_eval_task": task, "output_type": output_type}))
        run.append(name, rows)
        run.update_task(name, summary=summary)
        written.append(name)
    return written
