"""Re-scoring throughput of `medharness score RUN_DIR` (a script, not a test): prints a Markdown table.

Writes run directories of N rows with the real run log (no model, no images) and times `score_run`
(read + validate + parse + score + summarise) under one and all CPUs, for three workloads:

- `open VQA, short answers`: VQA-RAD rows, every question different (as in a real test set); answers half
  short, hedged or tagged ("yes", "<answer>x</answer>", ...), half free-text phrases (about 2,500 distinct,
  against four golds), so an (answer, gold) pair recurs as in a real run's short answers. Under the harness,
  mumc and llava_med conventions, then each phase alone.
- `open VQA, every answer distinct`: the same rows with the row number in every answer: nothing recurs.
- `classification, short answers`: OrganAMNIST rows with the task's one question and 11 classes, the `plain`
  prompt's label answers (right, wrong, off-list, empty): inputs repeat by the thousand, as in a real
  classification run.
- `classification, reasoning outputs`: the same rows answered in the `names` prompt's format
  (`<think>...</think> \\boxed{label}`), every text different.

`--process`: the whole-process comparison instead (issue 19): a Python process that only reads the
short-answer VQA run's rows file and `json.loads` each line, against `medharness score RUN_DIR` as a process
(`--workers 1`, and the default: one worker per CPU), run interleaved; median wall time and the ratio to the
json-only process. Start-up, imports, task loading, the summary and exit all count here, as for a user; the
processes may write their bytecode caches (PYTHONDONTWRITEBYTECODE is dropped for them), as an installed
package has them, and a first round that is not timed warms the caches.

Usage: python bench/rescore.py [--rows 100000] [--repeat 3] [--process]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

ANSWERS = ["yes", "no", "Yes.", "left lung", "The answer is no", "mri", "yes or no", "<answer>x</answer>"]
GOLDS = ["yes", "no", "yes", "left lung", "no", "ct", "yes", "x"]
WORDS = ["left", "right", "upper", "lower", "middle", "apical", "basal", "lateral", "medial", "anterior",
         "posterior", "central", "peripheral", "superior", "inferior", "proximal", "distal", "cortical",
         "hilar", "pleural", "cardiac", "hepatic", "renal", "splenic", "gastric", "colonic", "pelvic",
         "cranial", "spinal", "thoracic", "abdominal", "vascular", "arterial", "venous", "nodal", "focal",
         "diffuse", "bilateral", "unilateral", "small", "large", "round", "oval", "dense", "lucent",
         "calcified", "cystic", "solid", "mixed"]
ORGANS = ["bladder", "left femur", "right femur", "heart", "left kidney", "right kidney", "liver",
          "left lung", "right lung", "pancreas", "spleen"]


def vqa_row(i: int) -> tuple[str, Any, dict[str, Any], tuple[str, ...], str]:
    k, w = i % len(ANSWERS), len(WORDS)
    text = ANSWERS[k] if i % 2 else f"The {WORDS[i % w]} of the {WORDS[(i // w) % w]} lobe."
    question = f"Is there an abnormality in the {WORDS[i % w]} region of image {i // 2}?"
    return question, GOLDS[k], {"answer_type": "CLOSED" if GOLDS[k] in ("yes", "no") else "OPEN"}, (), text


def vqa_distinct_row(i: int) -> tuple[str, Any, dict[str, Any], tuple[str, ...], str]:
    question, target, meta, choices, text = vqa_row(i)
    return question, target, meta, choices, f"{text} (finding {i})"


def _organ_answer(i: int, gold: int) -> str:
    """Right 70%, a wrong class 20%, off-list 5%, empty 5% (a fixed pattern)."""
    r = (i * 7919) % 100
    return (ORGANS[gold] if r < 70 else ORGANS[(gold + 1 + r % 10) % 11] if r < 90
            else "kidney" if r < 95 else "")


def organ_short_row(i: int) -> tuple[str, Any, dict[str, Any], tuple[str, ...], str]:
    gold = i % 11
    return ("Which organ is shown in this CT image?", ORGANS[gold],
            {"label": gold, "class_name": ORGANS[gold]}, tuple(ORGANS), _organ_answer(i, gold))


def organ_reasoning_row(i: int) -> tuple[str, Any, dict[str, Any], tuple[str, ...], str]:
    question, target, meta, choices, answer = organ_short_row(i)
    text = (f"<think>Slice {i}: the structure at the centre has the density and outline of the "
            f"{WORDS[i % len(WORDS)]} {answer or 'organ'}.</think> \\boxed{{{answer}}}")
    return question, target, meta, choices, text


def write_run(folder: Path, task_name: str, prompt: str | None, n_rows: int,
              row: Callable[[int], tuple[str, Any, dict[str, Any], tuple[str, ...], str]]) -> None:
    from medharness.core.records import Answer, Generation, ResultRow, Sample, TaskEntry
    from medharness.runs.pipeline import RunConfig
    from medharness.runs.runlog import RunDir
    from medharness.taskfiles.task import load_task, recipe_for

    task = load_task(task_name, {"prompt": prompt} if prompt else {})
    run = RunDir.create(folder, RunConfig(model="bench", tasks=task_name))
    convention = recipe_for(task).convention  # as recorded by a run: name@version
    run.set_task(task_name, TaskEntry(version=task.version, prompt=task.prompt_name, convention=convention,
                                      path=str(task.path)))
    rows = []
    for i in range(n_rows):
        question, target, meta, choices, text = row(i)
        sample = Sample(id=str(i), task=task_name, question=question, target=target,
                        images=(f"img{i // 2}.jpg",), choices=choices, meta=meta)
        rows.append(ResultRow(task=task_name, task_version=task.version, sample=sample, prompt_hash="",
                              generation=Generation(sample_id=str(i), text=text), answer=Answer()))
    run.append(task_name, rows)
    run.set_status("finished")


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# reads the rows file line by line and json-loads each line, keeping nothing (the yardstick)
JSON_ONLY = "import json, sys\nwith open(sys.argv[1], encoding='utf-8') as f:\n    for line in f:\n" \
            "        json.loads(line)\n"


def process_table(n: int, repeat: int) -> None:
    """Whole processes, interleaved: the json-only reader vs `medharness score RUN_DIR`."""
    from medharness.runs.runlog import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vqa_rad"
        write_run(folder, "vqa_rad", None, n, vqa_row)
        rows_file = RunDir.open(folder).task_file("vqa_rad")
        score = [sys.executable, "-m", "medharness.cli", "score", str(folder)]
        commands = {
            "python: read + `json.loads` every line": [sys.executable, "-c", JSON_ONLY, str(rows_file)],
            "`medharness score RUN_DIR --workers 1`": [*score, "--workers", "1"],
            "`medharness score RUN_DIR` (default workers)": score}
        times: dict[str, list[float]] = {label: [] for label in commands}
        cpu: dict[str, list[float]] = {label: [] for label in commands}
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        for command in commands.values():  # a warm-up round: bytecode caches, the file in the page cache
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        for _ in range(repeat):
            for label, command in commands.items():
                used, t0 = _children_cpu(), time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
                times[label].append(time.perf_counter() - t0)
                cpu[label].append(_children_cpu() - used)
    base, base_cpu = (statistics.median(next(iter(d.values()))) for d in (times, cpu))
    table = [[label, f"{statistics.median(ts):.2f} s", f"{min(ts):.2f}-{max(ts):.2f} s",
              f"{statistics.median(ts) / base:.2f}x", f"{statistics.median(cpu[label]):.2f} s",
              f"{statistics.median(cpu[label]) / base_cpu:.2f}x"] for label, ts in times.items()]
    print(f"{n:,} rows (open VQA, short answers, harness); {os.cpu_count()} CPUs; median of {repeat}\n")
    print(tabulate(table, headers=["process", "wall", "range", "wall vs json-only", "CPU (user + sys)",
                                   "CPU vs json-only"], tablefmt="github"))


def _children_cpu() -> float:
    """CPU seconds used so far by this process's finished children (their workers included)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--process", action="store_true",
                        help="whole processes: json-only reader vs `medharness score RUN_DIR`")
    args = parser.parse_args()
    if args.process:
        process_table(args.rows, args.repeat)
        return
    from medharness.runs.rescore import score_run
    from medharness.runs.runlog import RunDir, gc_paused, parse_rows_to_score
    from medharness.scoring.recipe import DistinctScores, Scored, summarise_scored
    from medharness.taskfiles.task import load_task, recipe_for

    n, cpus = args.rows, os.cpu_count() or 1
    workloads = [("open VQA, short answers", "vqa_rad", None, vqa_row, ("harness", "mumc", "llava_med")),
                 ("open VQA, every answer distinct", "vqa_rad", "distinct", vqa_distinct_row, ("harness",)),
                 ("classification, short answers", "medmnist_organa", "plain", organ_short_row, ("harness",)),
                 ("classification, reasoning outputs", "medmnist_organa", "names",
                  organ_reasoning_row, ("harness",))]
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, task_name, prompt, row, conventions in workloads:
            folder = Path(tmp) / task_name / (prompt or "default")
            write_run(folder, task_name, None if prompt == "distinct" else prompt, n, row)
            score_run(folder)  # warm imports (normalisers, sklearn) outside the timings
            for convention in conventions:
                for workers in sorted({1, cpus}):
                    dt = timed(lambda f=folder, c=convention, w=workers:  # type: ignore[misc]
                               score_run(f, c, w), args.repeat)
                    table.append([label, f"`score RUN_DIR --workers {workers}` ({convention})", f"{dt:.2f} s",
                                  f"{n / dt:,.0f} rows/s"])
        # the phases of one process on the first workload, harness convention
        folder = Path(tmp) / "vqa_rad" / "default"
        file = RunDir.open(folder).task_file("vqa_rad")
        lines = file.read_text().split("\n")
        task = load_task("vqa_rad")
        recipe = recipe_for(task)

        def read() -> list[Any]:
            with gc_paused():
                return list(parse_rows_to_score(file, lines))

        def score(rows: list[Any]) -> DistinctScores:
            scores = DistinctScores(recipe)
            with gc_paused():
                for r in rows:
                    scores.add(r["sample"], r["generation"]["text"], r["generation"].get("error"))
            return scores

        rows = read()
        phase = "open VQA, phases (1 process, harness)"
        table.append([phase, "read + validate", f"{timed(read, args.repeat):.2f} s", ""])
        table.append([phase, "parse + score", f"{timed(lambda: score(rows), args.repeat):.2f} s", ""])
        scores = score(rows)
        scored = Scored.build(scores.results, scores.samples, np.asarray(scores.which),
                              ["id:" + r["sample"]["id"] for r in rows], [r["sample"]["meta"] for r in rows],
                              recipe, task.config.group_by, task.config.cluster_by)
        dt = timed(lambda: summarise_scored(scored, recipe, "vqa_rad", task.version, task.config.cluster_by),
                   args.repeat)
        table.append([phase, "summarise (intervals included)", f"{dt:.2f} s", ""])
    print(f"{n:,} rows per run; {cpus} CPUs\n")
    print(tabulate(table, headers=["workload", "what", "median", "rate"], tablefmt="github"))


if __name__ == "__main__":
    main()
