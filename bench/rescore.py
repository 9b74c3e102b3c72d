"""Re-scoring throughput of `medharness score RUN_DIR` (a script, not a test): prints a Markdown table.

Writes a run directory of N VQA-RAD rows (a mix of short, hedged and tagged answers; no model, no images)
with the real run log; every other row's answer is a free-text phrase that few other rows share (about 2,500
distinct), so memoised normalisation is not credited with more repetition than a real run has; then times `score_run` (read + parse + score + summarise) under three conventions,
and each phase alone. Usage: python bench/rescore.py [--rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

ANSWERS = ["yes", "no", "Yes.", "left lung", "The answer is no", "mri", "yes or no", "<answer>x</answer>"]
GOLDS = ["yes", "no", "yes", "left lung", "no", "ct", "yes", "x"]
WORDS = ["left", "right", "upper", "lower", "middle", "apical", "basal", "lateral", "medial", "anterior",
         "posterior", "central", "peripheral", "superior", "inferior", "proximal", "distal", "cortical", "hilar",
         "pleural", "cardiac", "hepatic", "renal", "splenic", "gastric", "colonic", "pelvic", "cranial", "spinal",
         "thoracic", "abdominal", "vascular", "arterial", "venous", "nodal", "focal", "diffuse", "bilateral",
         "unilateral", "small", "large", "round", "oval", "dense", "lucent", "calcified", "cystic", "solid",
         "mixed"]


def write_run(folder: Path, n_rows: int) -> None:
    from medharness.pipeline import RunConfig
    from medharness.records import Answer, Generation, ResultRow, Sample, TaskEntry
    from medharness.runlog import RunDir
    from medharness.task import load_task

    task = load_task("vqa_rad")
    run = RunDir.create(folder, RunConfig(model="bench", tasks="vqa_rad").model_dump())
    run.set_task("vqa_rad", TaskEntry(version=task.version, prompt=task.prompt_name, convention="harness",
                                      path=str(task.path)))
    rows = []
    for i in range(n_rows):
        k = i % len(ANSWERS)
        w = len(WORDS)
        text = ANSWERS[k] if i % 2 else f"The {WORDS[i % w]} of the {WORDS[(i // w) % w]} lobe."
        sample = Sample(id=str(i), task="vqa_rad", question="q?", target=GOLDS[k], images=(f"img{i // 2}.jpg",),
                        meta={"answer_type": "CLOSED" if GOLDS[k] in ("yes", "no") else "OPEN"})
        rows.append(ResultRow(task="vqa_rad", task_version=task.version, sample=sample, prompt_hash="",
                              generation=Generation(sample_id=str(i), text=text), answer=Answer()))
    run.append("vqa_rad", rows)
    run.set_status("finished")


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from medharness.rescore import score_run
    from medharness.runlog import RunDir
    from medharness.scoring import recipe_for, rescore, summarise
    from medharness.task import load_task

    table = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        write_run(folder, args.rows)
        score_run(folder)  # warm imports (normalisers, sklearn) outside the timings
        n = args.rows
        cpus = os.cpu_count() or 1
        for convention in ("harness", "mumc", "llava_med"):
            for workers in sorted({1, cpus}):
                dt = timed(lambda c=convention, w=workers: score_run(folder, c, w), args.repeat)  # type: ignore[misc]
                table.append([f"`score RUN_DIR --workers {workers}` {n:,} rows ({convention})", f"{dt:.2f} s",
                              f"{n / dt:,.0f} rows/s"])
        run = RunDir.open(folder)
        dt = timed(lambda: run.rows("vqa_rad"), args.repeat)
        table.append([f"  read + validate {n:,} rows", f"{dt:.2f} s", f"{n / dt:,.0f} rows/s"])
        rows = run.rows("vqa_rad")
        task = load_task("vqa_rad")
        recipe = recipe_for(task)
        dt = timed(lambda: rescore(rows, recipe), args.repeat)
        table.append([f"  parse + score {n:,} rows (harness)", f"{dt:.2f} s", f"{n / dt:,.0f} rows/s"])
        scored = rescore(rows, recipe)
        dt = timed(lambda: summarise(scored, recipe, ["answer_type"], "vqa_rad", "1"), args.repeat)
        table.append([f"  summarise {n:,} rows", f"{dt:.2f} s", f"{n / dt:,.0f} rows/s"])
    print(f"{os.cpu_count()} CPUs\n")
    print(tabulate(table, headers=["benchmark", "median", "rate"], tablefmt="github"))


if __name__ == "__main__":
    main()
