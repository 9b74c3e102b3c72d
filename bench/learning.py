"""Learning, measured by the harness itself (a script, not a test): prints a Markdown table, writes a PNG.

On a phantom task, with the small offline tiny model (`medharness make-tiny-model --size small`):
1. the majority baseline on the held-out test samples (`medharness run --model baseline:majority`);
2. SFT (`medharness train --recipe sft --preset tiny_cpu`) from the random-weight model, saving a checkpoint
   every K steps; each checkpoint (and the untrained model, step 0) is scored with `medharness run` on the
   same test samples (never training samples: the phantom train split is generated from seed + 1000). With
   `--train-n N` (default 2000) it trains on a copy of the task file whose phantom source has n = N, i.e. the
   task's own train split extended to N generated samples, still disjoint from the test split;
3. GRPO (`--recipe grpo --preset tiny_cpu`, the task's default rewards: its primary metric, plus format
   compliance 0.1 where the prompt variant has a format; `plain` has none) from the SFT final checkpoint,
   checkpoints every K steps, each scored the same way; the mean training reward per logging step comes from
   the GRPO run's OUTPUT/logs.jsonl, the mean per step from OUTPUT/completions.jsonl.
A finished stage (train.json `finished`, an eval folder with run.json) is reused when the script runs again
with the same --output (its time then shows as 0 s); `--grpo-name` runs another GRPO setting from the same
SFT. Accuracy intervals are 95 % Wilson score intervals on n test samples (binary per-sample accuracy). The
balanced accuracy (mean of the per-gold-class accuracies, from the run's samples/<task>.jsonl) is printed too:
the majority baseline scores 50 on it whatever the class balance.
Every stage runs the `medharness` CLI in a subprocess with HF_HUB_OFFLINE=1; nothing is downloaded.

Usage: python bench/learning.py [--output runs/learning] [--task phantom_presence] [--limit 200] [--seed 0]
       [--sft-steps 400] [--sft-every 100] [--grpo-steps 40] [--grpo-every 20] [--train-n 2000]
       [--png docs/img/learning.png]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from medharness.core.records import LogRow
from medharness.runs.folders import TrainDir
from medharness.runs.runlog import RunDir

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
for _key, _value in OFFLINE.items():
    os.environ.setdefault(_key, _value)


def medharness(*args: str, log: Path) -> float:
    """Run one `medharness` command (output to `log`); returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "medharness.cli", *args]
    t0 = time.perf_counter()
    with log.open("a") as out:
        out.write("$ medharness " + " ".join(args) + "\n")
        out.flush()
        proc = subprocess.run(cmd, check=False, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **OFFLINE})
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): medharness {' '.join(args)}; see {log}")
    return time.perf_counter() - t0


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of k successes in n trials."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def evaluate(model: str, task: str, limit: int, out: Path, log: Path) -> dict[str, Any]:
    """`medharness run` on the task's test split; the primary metric's value (0-1), n and unparsed."""
    if not (out / "run.json").exists():
        medharness("run", "--model", model, "--tasks", task, "--limit", str(limit), "--output", str(out),
                   "--batch-size", "32", "--no-cache", "--no-progress", log=log)
    summary = RunDir.open(out).log.tasks[task].summary
    assert summary is not None and summary.primary is not None, f"{out}: no summary of {task}"
    name = summary.primary
    value, n = summary.metrics[name].value, summary.metrics[name].n
    low, high = wilson(value * n, n)
    by_class: dict[str, list[float]] = {}  # the metric per gold answer, from the run's own sample rows
    for line in (out / "samples" / f"{task}.jsonl").read_text().splitlines():
        row = json.loads(line)
        score = row["scores"].get(name)
        by_class.setdefault(str(row["sample"]["target"]), []).append(0.0 if score is None else float(score))
    per_class = {k: sum(v) / len(v) for k, v in sorted(by_class.items())}
    return {"metric": name, "value": value, "n": n, "low": low, "high": high,
            "unparsed": summary.n_unparsed, "per_class": per_class,
            "balanced": sum(per_class.values()) / len(per_class)}


def checkpoints(train_dir: Path) -> list[tuple[int, Path]]:
    return [(int(p.name.rpartition("-")[2]), p) for p in TrainDir(train_dir).checkpoints()]


def read_logs(train_dir: Path) -> list[LogRow]:
    return TrainDir(train_dir).log_rows()


def train(recipe: str, model: Path, out: Path, args: argparse.Namespace, steps: int, every: int, lr: float,
          extra: list[str], log: Path) -> float:
    if TrainDir(out).state().status == "finished":
        return 0.0
    if out.exists():
        shutil.rmtree(out)
    cmd = ["train", "--recipe", recipe, "--preset", recipe, "--preset", "tiny_cpu", "--task", args.train_task,
           "--model", str(model), "--seed", str(args.seed), "--max-steps", str(steps), "--output", str(out),
           "-C", "samples.limit=null", "-C", f"trl.save_steps={every}", "-C", f"trl.learning_rate={lr}",
           "-C", f"trl.logging_steps={args.log_every}", "-C",
           f"freeze_vision={str(args.freeze_vision).lower()}"]
    for item in extra:
        cmd += ["-C", item]
    return medharness(*cmd, log=log)


def plot(rows: list[dict[str, Any]], majority: dict[str, Any], grpo_logs: list[LogRow],
         per_step: dict[int, float], sft_steps: int, title: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7), height_ratios=[3, 2])
    for stage, colour in (("SFT", "tab:blue"), ("GRPO", "tab:red")):
        pts = [r for r in rows if r["stage"] == stage]
        if not pts:
            continue
        x = [r["x"] for r in pts]
        y = [100 * r["value"] for r in pts]
        err = [[100 * (r["value"] - r["low"]) for r in pts], [100 * (r["high"] - r["value"]) for r in pts]]
        top.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour,
                     label=f"{stage} accuracy (95% Wilson)")
        top.plot(x, [100 * r["balanced"] for r in pts], marker="s", linestyle=":", color=colour, alpha=0.6,
                 markerfacecolor="none", label=f"{stage} balanced accuracy (mean per-class)")
    top.axhline(100 * majority["value"], color="grey", linestyle="--",
                label=f"majority baseline {100 * majority['value']:.1f} (balanced: 50)")
    top.axvline(sft_steps, color="black", linewidth=0.8, alpha=0.5)
    top.set_ylabel(f"test {majority['metric']} (%)")
    top.set_title(title, fontsize=10)
    top.legend(fontsize=8, loc="lower right")
    top.grid(alpha=0.3)
    top.set_xlabel(f"optimiser step (SFT 0-{sft_steps}, then GRPO)")
    if per_step:
        steps = sorted(per_step)
        bottom.plot(steps, [per_step[s] for s in steps], linestyle="none", marker=".", color="tab:red",
                    alpha=0.3, label="mean reward of one step's completions")
    gx = [r.step for r in grpo_logs if r.metric("reward") is not None]
    gy = [r.metric("reward") for r in grpo_logs if r.metric("reward") is not None]
    bottom.plot(gx, gy, marker="o", color="tab:red",
                label="mean training reward per logging step (logs.jsonl)")
    bottom.set_xlabel("GRPO step")
    bottom.set_ylabel("mean reward (0-1)")
    bottom.legend(fontsize=8, loc="lower right")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def step_rewards(train_dir: Path) -> dict[int, float]:
    """Mean total reward of each GRPO step's sampled completions (OUTPUT/completions.jsonl)."""
    totals: dict[int, list[float]] = {}
    for row in TrainDir(train_dir).completion_rows():
        if row.total is not None and row.step is not None:
            totals.setdefault(row.step, []).append(row.total)
    return {step: sum(v) / len(v) for step, v in totals.items()}


def mean_reward(logs: list[LogRow], lo: int, hi: int) -> float | None:
    vals = [v for r in logs if (v := r.metric("reward")) is not None and lo < r.step <= hi]
    return sum(vals) / len(vals) if vals else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/learning"))
    parser.add_argument("--task", default="phantom_presence")
    parser.add_argument("--limit", type=int, default=200, help="held-out test samples per evaluation")
    parser.add_argument("--size", default="small", choices=["tiny", "small"], help="make-tiny-model --size")
    parser.add_argument("--seed", type=int, default=0, help="model init, training data order and sampling")
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--sft-every", type=int, default=100)
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--sft-batch", type=int, default=8)
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument("--grpo-every", type=int, default=20)
    parser.add_argument("--grpo-lr", type=float, default=1e-4)
    parser.add_argument("--grpo-name", default="grpo",
                        help="folder of the GRPO stage under --output (a second GRPO setting reuses the SFT "
                             "stage)")
    parser.add_argument("--generations", type=int, default=8, help="GRPO completions per prompt")
    parser.add_argument("--train-n", type=int, default=2000,
                        help="train on the task's phantom source with this many generated train samples "
                             "(0: the task file's own train split)")
    parser.add_argument("--grpo-prompts", type=int, default=1, help="GRPO prompts per optimiser step")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--freeze-vision", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--png", type=Path, default=Path("docs/img/learning.png"))
    args = parser.parse_args()

    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    args.train_task = args.task
    # the same task file with a larger generated train split (train = seed + 1000, test = seed)
    if args.train_n:
        import yaml

        spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "tasks"
                               / f"{args.task}.yaml").read_text())
        spec["name"] = f"{args.task}_train{args.train_n}"
        for source in spec["sources"]:
            source["n"] = args.train_n
        args.train_task = str(out / f"{spec['name']}.yaml")
        Path(args.train_task).write_text(yaml.safe_dump(spec, sort_keys=False))

    model = out / f"model-{args.size}"
    if not (model / "config.json").exists():
        times["build"] = medharness("make-tiny-model", str(model), "--size", args.size, "--seed",
                                    str(args.seed), log=log)
    majority = evaluate("baseline:majority", args.task, args.limit, out / "eval" / "majority", log)

    t0 = time.perf_counter()
    sft_dir = out / "sft"
    train("sft", model, sft_dir, args, args.sft_steps, args.sft_every, args.sft_lr,
          [f"trl.per_device_train_batch_size={args.sft_batch}"], log)
    times["sft train"] = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for step, path in [(0, model), *checkpoints(sft_dir)]:
        rows.append({"stage": "SFT", "step": step, "x": step,
                     **evaluate(str(path), args.task, args.limit, out / "eval" / f"sft-{step}", log)})
    times["sft eval"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    grpo_dir = out / args.grpo_name
    gen = args.generations
    train("grpo", sft_dir / "final", grpo_dir, args, args.grpo_steps, args.grpo_every, args.grpo_lr,
          [f"trl.num_generations={gen}", f"trl.per_device_train_batch_size={gen * args.grpo_prompts}"], log)
    times["grpo train"] = time.perf_counter() - t0
    grpo_logs = read_logs(grpo_dir)
    t0 = time.perf_counter()
    previous = 0
    for step, path in checkpoints(grpo_dir):
        row = evaluate(str(path), args.task, args.limit, out / "eval" / f"{args.grpo_name}-{step}", log)
        rows.append({"stage": "GRPO", "step": step, "x": args.sft_steps + step, **row,
                     "reward": mean_reward(grpo_logs, previous, step)})
        previous = step
    times["grpo eval"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_all

    first = mean_reward(grpo_logs, 0, args.log_every)
    def cells(r: dict[str, Any]) -> list[object]:
        per_class = " / ".join(f"{100 * v:.0f}" for v in r["per_class"].values())
        return [f"{100 * r['value']:.1f}", f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}]", r["n"],
                r["unparsed"], f"{100 * r['balanced']:.1f} ({per_class})"]

    table = [["majority baseline", "-", *cells(majority), ""]]
    for r in rows:
        reward = r.get("reward")
        table.append([r["stage"], r["step"], *cells(r), "" if reward is None else f"{reward:.3f}"])
    print(f"task {args.task}, metric {majority['metric']}, test split, first {args.limit} samples; "
          f"model make-tiny-model --size {args.size} --seed {args.seed}; seed {args.seed}")
    classes = " / ".join(majority["per_class"])
    print(tabulate(table, headers=["stage", "step", "accuracy %", "95% Wilson", "n", "unparsed",
                                   f"balanced accuracy % (per class: {classes})",
                                   "GRPO mean training reward (steps since previous row)"],
                   tablefmt="github"))
    if first is not None:
        print(f"\nGRPO mean training reward over its first {args.log_every} steps: {first:.3f}")
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    title = (f"{args.task} (test, n={majority['n']}), tiny model --size {args.size}, seed {args.seed}: "
             f"SFT {args.sft_steps} steps, then GRPO {args.grpo_steps}")
    plot(rows, majority, grpo_logs, step_rewards(grpo_dir), args.sft_steps, title, args.png)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "majority": majority, "rows": rows,
              "grpo_logs": [r.model_dump(mode="json") for r in grpo_logs], "times": times}
    (out / f"learning-{args.grpo_name}.json").write_text(json.dumps(record, indent=1))
    print(f"PNG: {args.png}; records: {out}/learning-{args.grpo_name}.json; commands and their output: {log}")


if __name__ == "__main__":
    main()
