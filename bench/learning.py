"""Learning, measured by the harness itself (a script, not a test): does each recipe make a better model?

For each seed, on `phantom_presence` with the small offline tiny model, every stage through the `medharness`
CLI (offline, in subprocesses), with the presets `tiny_cpu` + `tiny_learn`:
1. `make-tiny-model --size small --seed S`: random weights (step 0, scored too);
2. SFT from it (600 steps, a checkpoint every 10): the final model;
3. "SFT early": the first of its checkpoints whose balanced accuracy on the VALIDATION copy is within
   [60, 85] % (the rule was fixed before any test score was seen; checkpoints it passes are deleted);
4. from SFT early: GRPO (`--preset grpo`), Dr.GRPO (`--preset dr_grpo`) and DPO (`--preset dpo`);
   from the step-0 model: SFT-LoRA (`--preset sft_lora`, then `tiny_lora` after `tiny_learn`);
5. every model scored with `medharness run` on the first --limit samples of the evaluation split, and every
   trained model again with `--ablate blank` (a black image: is the picture used?).
The validation copy is the task file with its test split drawn from phantom seed 7 (the test split is seed 0,
the train split seed 1000 in both). `--validate` scores every stage on it instead of the test split: the way
to choose settings without seeing the test split. Accuracy intervals are the run's own (95 % Wilson); balanced
accuracy (mean of the per-answer accuracies: 50 for any model that ignores the picture, whatever the class
mix) gets a 95 % percentile bootstrap interval (scipy, 2,000 resamples, stratified by answer). GRPO's mean
training reward per quarter of its steps comes from OUTPUT/completions.jsonl. A finished stage (train.json
`finished`, an eval folder with run.json) is reused when the script runs again with the same --output; the
"train s" column is each stage's training time from its train.json, reused or not.

The checks printed at the end are the issue's targets: SFT accuracy and balanced accuracy >= 95 in <= 180 s of
training; SFT early within [60, 85]; GRPO balanced +10 with its last quarter's mean reward above the first's;
Dr.GRPO and DPO balanced +5; SFT-LoRA balanced >= 90; every trained model's blank-image balanced accuracy
<= 55.

Usage: python bench/learning.py [--output runs/learning] [--seeds 0,1,2] [--validate] [--limit 200]
       [--recipes grpo,dr_grpo,dpo,sft_lora] [--set STAGE:KEY=VALUE ...] [--json FILE]
`--set grpo:trl.beta=0.04` passes `-C trl.beta=0.04` to that stage's `train` (a candidate setting, to be tried
with --validate and a fresh --output whose seed folders may link the finished model and sft stages).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tabulate import tabulate

from medharness.core.atomic import write_text_atomic
from medharness.runs.folders import TrainDir
from medharness.runs.runlog import RunDir

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TASK = "phantom_presence"
TASK_FILE = Path(__file__).resolve().parents[1] / "tasks" / f"{TASK}.yaml"
VALIDATION_SEED = 7
EARLY = (0.60, 0.85)  # validation balanced accuracy of the SFT checkpoint GRPO, Dr.GRPO and DPO start from
# stage -> its recipe preset, and the overlays after tiny_cpu + tiny_learn
PRESETS = {"grpo": ("grpo", []), "dr_grpo": ("dr_grpo", []), "dpo": ("dpo", []),
           "sft_lora": ("sft_lora", ["tiny_lora"])}
FROM_BASE = {"sft_lora"}  # trained from the step-0 model; the others from SFT early
LABELS = {"base": "untrained (step 0)", "sft": "SFT", "early": "SFT early", "grpo": "GRPO from early",
          "dr_grpo": "Dr.GRPO from early", "dpo": "DPO from early", "sft_lora": "SFT-LoRA"}


def medharness(*args: str, log: Path) -> float:
    """Run one `medharness` command (output appended to `log`); returns its wall time in seconds."""
    t0 = time.perf_counter()
    where = [a for a in args[1:] if "/" in a][-1:]  # progress: the command and its last path (all in `log`)
    print(f"{time.strftime('%H:%M:%S')} medharness {' '.join([args[0], *where])}", file=sys.stderr,
          flush=True)
    with log.open("a") as out:
        out.write("$ medharness " + " ".join(args) + "\n")
        out.flush()
        proc = subprocess.run([sys.executable, "-m", "medharness.cli", *args], check=False, stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE})
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): medharness {' '.join(args)}; see {log}")
    return time.perf_counter() - t0


def validation_copy(out: Path, task: str = TASK) -> Path:
    """The task file with its test split drawn from another phantom seed (same train split)."""
    spec = yaml.safe_load((TASK_FILE.parent / f"{task}.yaml").read_text())
    spec["name"] = f"{task}_val"
    for source in spec["sources"]:
        train = source.get("train") or {}
        source["train"] = {**train, "seed": train.get("seed", source.get("seed", 0) + 1000)}
        source["seed"] = VALIDATION_SEED
    path = out / f"{spec['name']}.yaml"
    text = yaml.safe_dump(spec, sort_keys=False)
    if not path.exists() or path.read_text() != text:  # one process per seed may share the output folder
        write_text_atomic(path, text)
    return path


def balanced_interval(correct: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the balanced accuracy, resampling within each answer."""
    from scipy.stats import bootstrap

    groups = [correct[labels == k] for k in np.unique(labels)]
    result = bootstrap(groups, lambda *g: np.mean([x.mean() for x in g]), n_resamples=2000,
                       method="percentile", random_state=0, vectorized=False)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def evaluate(model: Path, task: str, limit: int, out: Path, log: Path,
             ablate: str | None = None) -> dict[str, Any]:
    """`medharness run` on the task's test split: accuracy with the run's interval, balanced accuracy."""
    if not (out / "run.json").exists():
        extra = ["--ablate", ablate] if ablate else []
        medharness("run", "--model", str(model), "--tasks", task, "--limit", str(limit), "--output", str(out),
                   "--batch-size", "50", "--no-cache", "--no-progress", *extra, log=log)
    log_ = RunDir.open(out).log
    name = next(iter(log_.tasks))
    summary = log_.tasks[name].summary
    assert summary is not None and summary.primary is not None, f"{out}: no summary of {name}"
    metric = summary.metrics[summary.primary]
    rows = [json.loads(line) for line in (out / "samples" / f"{name}.jsonl").read_text().splitlines()]
    correct = np.array([float(r["scores"].get(summary.primary) or 0.0) for r in rows])
    labels = np.array([str(r["sample"]["target"]) for r in rows])
    balanced = float(np.mean([correct[labels == k].mean() for k in np.unique(labels)]))
    low, high = balanced_interval(correct, labels)
    return {"metric": summary.primary, "accuracy": metric.value, "low": metric.ci_low, "high": metric.ci_high,
            "n": metric.n, "unparsed": metric.n_unparsed, "balanced": balanced, "balanced_low": low,
            "balanced_high": high}


def train(stage: str, model: Path, out: Path, seed: int, log: Path, extra: list[str]) -> float:
    """One training stage (reused when finished); returns its training time (train.json `seconds`)."""
    recipe_preset, overlays = PRESETS.get(stage, (stage, []))
    presets = [recipe_preset, "tiny_cpu", "tiny_learn", *overlays]
    return trained([*(a for p in presets for a in ("--preset", p)), "--task", TASK, "--model", str(model),
                    "--seed", str(seed), *extra], out, log)


def trained(argv: list[str], out: Path, log: Path) -> float:
    """`medharness train ARGV --output OUT` unless OUT holds a finished run; its training time."""
    if TrainDir(out).state().status != "finished":
        if out.exists():
            shutil.rmtree(out)
        medharness("train", *argv, "--output", str(out), log=log)
    record = TrainDir(out).log()
    return float(record.seconds or 0.0) if record is not None else 0.0


def first_within(sft: Path, key: str, window: tuple[float, float],
                 score: Callable[[Path, int], dict[str, Any]], prune: bool) -> tuple[int, dict[str, Any]]:
    """The first SFT checkpoint whose validation `score(checkpoint, step)[key]` lies within `window` (recorded
    in SFT/early.json and reused); with `prune`, the other checkpoints go."""
    chosen = sft / "early.json"
    if chosen.exists():
        record = json.loads(chosen.read_text())
        return int(record["step"]), record["validation"]
    for ckpt in TrainDir(sft).checkpoints():
        step = int(ckpt.name.rpartition("-")[2])
        found = score(ckpt, step)
        if window[0] <= found[key] <= window[1]:
            if prune:
                for other in TrainDir(sft).checkpoints():
                    if other != ckpt:
                        shutil.rmtree(other)
            chosen.write_text(json.dumps({"step": step, "validation": found}))
            return step, found
    sys.exit(f"{sft}: no checkpoint with a validation {key} within {window}")


def pick_early(sft: Path, val_task: str, limit: int, evals: Path, log: Path) -> tuple[int, dict[str, Any]]:
    """The first SFT checkpoint whose validation balanced accuracy is within EARLY; the ones before it go."""
    return first_within(sft, "balanced", EARLY, lambda ckpt, step: evaluate(
        ckpt, val_task, limit, evals / f"early-{step}", log), prune=True)


def quarter_rewards(train_dir: Path) -> tuple[float, float] | None:
    """Mean total reward of the sampled completions in the first and in the last quarter of the steps."""
    per_step: dict[int, list[float]] = {}
    for row in TrainDir(train_dir).completion_rows():
        if row.total is not None and row.step is not None:
            per_step.setdefault(row.step, []).append(row.total)
    if not per_step:
        return None
    steps = sorted(per_step)
    q = max(1, len(steps) // 4)
    first = [v for s in steps[:q] for v in per_step[s]]
    last = [v for s in steps[-q:] for v in per_step[s]]
    return float(np.mean(first)), float(np.mean(last))


def run_seed(seed: int, args: argparse.Namespace, val_task: Path, eval_task: str) -> dict[str, Any]:
    out = args.output / f"seed-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    log, evals = out / "commands.log", out / ("eval-validation" if args.validate else "eval")
    model = out / "model"
    if not (model / "config.json").exists():
        medharness("make-tiny-model", str(model), "--size", "small", "--seed", str(seed), log=log)
    times: dict[str, float] = {}
    times["sft"] = train("sft", model, out / "sft", seed, log, ["-C", "trl.save_steps=10"])
    step, early_val = pick_early(out / "sft", str(val_task), args.limit, out / "eval-validation", log)
    early = out / "sft" / f"checkpoint-{step}"
    for stage in args.recipes:
        start = model if stage in FROM_BASE else early
        extra = [a for item in args.set.get(stage, []) for a in ("-C", item)]
        times[stage] = train(stage, start, out / stage, seed, log, ["-C", "trl.save_steps=100000", *extra])
    models = {"base": model, "sft": out / "sft" / "final", "early": early,
              **{stage: out / stage / "final" for stage in args.recipes}}
    scores = {name: evaluate(path, eval_task, args.limit, evals / name, log) for name, path in models.items()}
    blank = {name: evaluate(path, eval_task, args.limit, evals / f"{name}-blank", log, ablate="blank")
             for name, path in models.items() if name not in ("base", "early")}
    rewards = {stage: quarter_rewards(out / stage) for stage in args.recipes if stage in ("grpo", "dr_grpo")}
    return {"seed": seed, "early_step": step, "early_validation": early_val, "scores": scores, "blank": blank,
            "rewards": rewards, "train_seconds": times}


def checks(r: dict[str, Any]) -> dict[str, bool]:
    s, b = r["scores"], r["blank"]
    early = s["early"]["balanced"]
    found = {
        "SFT acc >= 95": s["sft"]["accuracy"] >= 0.95, "SFT balanced >= 95": s["sft"]["balanced"] >= 0.95,
        "SFT early in [60, 85]": EARLY[0] <= early <= EARLY[1],
        "blank balanced <= 55 (every trained model)": all(v["balanced"] <= 0.55 for v in b.values()),
    }
    if r["train_seconds"].get("sft"):
        found["SFT training <= 180 s"] = r["train_seconds"]["sft"] <= 180
    if "grpo" in s:
        q = r["rewards"]["grpo"]
        found["GRPO balanced +10"] = s["grpo"]["balanced"] - early >= 0.10
        found["GRPO reward: last quarter > first"] = q is not None and q[1] > q[0]
    for stage in ("dr_grpo", "dpo"):
        if stage in s:
            found[f"{LABELS[stage].split()[0]} balanced +5"] = s[stage]["balanced"] - early >= 0.05
    if "sft_lora" in s:
        found["SFT-LoRA balanced >= 90"] = s["sft_lora"]["balanced"] >= 0.90
    return found


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    split = (f"validation copy (phantom seed {VALIDATION_SEED})" if args.validate
             else "test split (phantom seed 0)")
    print(f"{TASK}, {split}, first {args.limit} samples; metric {results[0]['scores']['base']['metric']}")
    for r in results:
        table = []
        for name, s in r["scores"].items():
            blank = r["blank"].get(name)
            reward = r["rewards"].get(name)
            table.append([LABELS[name] + (f" (step {r['early_step']})" if name == "early" else ""),
                          pct(s["accuracy"]), f"[{pct(s['low'])}, {pct(s['high'])}]", s["unparsed"],
                          pct(s["balanced"]), f"[{pct(s['balanced_low'])}, {pct(s['balanced_high'])}]",
                          "-" if blank is None else pct(blank["balanced"]),
                          "-" if not reward else f"{reward[0]:.3f} -> {reward[1]:.3f}",
                          f"{r['train_seconds'][name]:.0f}" if r["train_seconds"].get(name) else "-"])
        print(f"\nseed {r['seed']} (SFT early = checkpoint-{r['early_step']}: validation balanced "
              f"{pct(r['early_validation']['balanced'])})")
        print(tabulate(table, headers=["model", "accuracy %", "95% Wilson", "unparsed", "balanced %",
                                       "95% bootstrap", "blank image: balanced %",
                                       "train reward: first -> last quarter", "train s"], tablefmt="github"))
    names = list(checks(results[0]))
    print("\n" + tabulate([[n, *("yes" if checks(r)[n] else "NO" for r in results)] for n in names],
                          headers=["target", *(f"seed {r['seed']}" for r in results)], tablefmt="github"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/learning"))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated: model init, data order, sampling")
    parser.add_argument("--limit", type=int, default=200, help="samples scored per evaluation")
    parser.add_argument("--validate", action="store_true",
                        help=f"score on the validation copy (phantom seed {VALIDATION_SEED}), not the test "
                             "split")
    parser.add_argument("--recipes", default="grpo,dr_grpo,dpo,sft_lora",
                        help="stages besides SFT: grpo, dr_grpo, dpo (from SFT early), sft_lora (from "
                             "step 0)")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE:KEY=VALUE",
                        help="a -C override for one stage's train (repeatable), e.g. grpo:trl.beta=0.04")
    parser.add_argument("--json", type=Path, help="write every figure here (default OUTPUT/learning.json)")
    args = parser.parse_args()
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    args.recipes = [r for r in args.recipes.split(",") if r]
    sets: dict[str, list[str]] = {}
    for item in args.set:
        stage, sep, override = item.partition(":")
        if not sep or "=" not in override:
            parser.error(f"--set {item!r}: give STAGE:KEY=VALUE")
        sets.setdefault(stage, []).append(override)
    args.set = sets
    unknown = set(args.recipes) - set(PRESETS)
    if unknown:
        parser.error(f"unknown --recipes {sorted(unknown)}; choose from {', '.join(PRESETS)}")
    val_task = validation_copy(args.output)
    eval_task = str(val_task) if args.validate else TASK
    t0 = time.perf_counter()
    results = [run_seed(int(seed), args, val_task, eval_task) for seed in args.seeds.split(",")]
    report(results, args)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; commands and their output: "
          f"{args.output}/seed-*/commands.log")
    path = args.json or args.output / ("learning-validation.json" if args.validate else "learning.json")
    path.write_text(json.dumps({"validate": args.validate, "limit": args.limit, "set": args.set,
                                "results": results, "checks": [checks(r) for r in results]}, indent=1))


if __name__ == "__main__":
    main()
