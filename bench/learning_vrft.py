"""VRFT-Aug learning on a grading task, measured by the harness itself (a script, not a test): does the
`vrft_aug` recipe raise MFRS, the reward it trains on and the metric `run` scores?

For each seed, on `phantom_size` (grade the largest lesion 0-3) in its `r1` prompt variant (`<think>` then
`\\boxed{grade}`, the VRFT-Aug format) with the small offline tiny model, every stage through the
`medharness` CLI (offline, in subprocesses), with the presets `tiny_cpu` + `tiny_learn`:
1. `make-tiny-model --size small --seed S`;
2. SFT from it on the gold answers written in the r1 format (600 steps, a checkpoint every 50);
3. "SFT early": the first of its checkpoints whose MFRS on the VALIDATION copy (phantom seed 7) lies within
   [0.55, 0.80] (fixed before any test score was seen; first [0.55, 0.75], which no checkpoint of seed 1 met
   on the validation copy);
4. `vrft_aug` from SFT early: GRPO with the recipe's rewards, 0.9 x MFRS + 0.1 x the strict think/boxed
   format (tiny_learn's vrft_aug schedule);
5. SFT early, SFT (final) and vrft_aug scored with `medharness run` on the first --limit samples of the test
   split in the r1 variant, vrft_aug again with `--ablate blank` (a black image: is the picture used?).
MFRS and grade accuracy intervals are the run's own (95 %: bootstrap for MFRS, Wilson for accuracy). The
training reward columns are the mean of the `mfrs` component (`rewards/mfrs/mean` in logs.jsonl) over the
first and the last quarter of the logged steps. Finished stages are reused when run again with the same
--output.

Usage: python bench/learning_vrft.py [--output runs/learning-vrft] [--seeds 0,1,2] [--validate] [--limit 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import first_within, medharness, trained, validation_copy  # the sibling script's

from medharness.runs.runlog import RunDir

TASK, PROMPT, METRIC = "phantom_size", "r1", "mfrs"
EARLY = (0.55, 0.80)  # validation MFRS of the SFT checkpoint vrft_aug starts from
EVAL_TOKENS = "48"  # above the 40 tokens vrft_aug generates in training (the sweep's budget rule)
PRESETS = ("--preset", "tiny_cpu", "--preset", "tiny_learn")


def evaluate(model: Path, task: str, limit: int, out: Path, log: Path,
             ablate: str | None = None) -> dict[str, Any]:
    """`medharness run` in the r1 variant: MFRS and grade accuracy with the run's intervals."""
    name = Path(task).stem
    if not (out / "run.json").exists():
        extra = ["--ablate", ablate] if ablate else []
        medharness("run", "--model", str(model), "--tasks", task, "-T", f"{name}.prompt={PROMPT}",
                   "--max-new-tokens", EVAL_TOKENS, "--limit", str(limit), "--output", str(out),
                   "--batch-size", "50", "--no-cache", "--no-progress", *extra, log=log)
    summary = RunDir.open(out).log.tasks[name].summary
    assert summary is not None, f"{out}: no summary of {name}"
    mfrs, acc = summary.metrics[METRIC], summary.metrics["grade_accuracy"]
    return {"mfrs": mfrs.value, "mfrs_low": mfrs.ci_low, "mfrs_high": mfrs.ci_high, "n": mfrs.n,
            "unparsed": mfrs.n_unparsed, "accuracy": acc.value, "acc_low": acc.ci_low,
            "acc_high": acc.ci_high}


def pick_early(sft: Path, val_task: str, limit: int, evals: Path, log: Path) -> tuple[int, dict[str, Any]]:
    """The first SFT checkpoint whose validation MFRS lies within EARLY."""
    return first_within(sft, METRIC, EARLY, lambda ckpt, step: evaluate(
        ckpt, val_task, limit, evals / f"early-{step}", log), prune=False)


def quarter_rewards(train_dir: Path) -> tuple[float, float]:
    """Mean `mfrs` reward component over the first and the last quarter of the logged steps."""
    rows = [json.loads(line) for line in (train_dir / "logs.jsonl").read_text().splitlines() if line.strip()]
    values = [r[f"rewards/{METRIC}/mean"] for r in rows if f"rewards/{METRIC}/mean" in r]
    q = max(1, len(values) // 4)
    return float(np.mean(values[:q])), float(np.mean(values[-q:]))


def run_seed(seed: int, args: argparse.Namespace, val_task: Path, eval_task: str) -> dict[str, Any]:
    out = args.output / f"seed-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    log, evals = out / "commands.log", out / ("eval-validation" if args.validate else "eval")
    model = out / "model"
    if not (model / "config.json").exists():
        medharness("make-tiny-model", str(model), "--size", "small", "--seed", str(seed), log=log)
    common = [*PRESETS, "--task", TASK, "--prompt", PROMPT, "--seed", str(seed)]
    times = {"sft": trained(["--preset", "sft", *common, "--model", str(model), "-C", "trl.save_steps=50"],
                          out / "sft", log)}
    step, early_val = pick_early(out / "sft", str(val_task), args.limit, out / "eval-validation", log)
    early = out / "sft" / f"checkpoint-{step}"
    times["vrft_aug"] = trained(["--recipe", "vrft_aug", *common, "--model", str(early),
                               "-C", "trl.save_steps=100000"], out / "vrft_aug", log)
    models = {"early": early, "sft": out / "sft" / "final", "vrft_aug": out / "vrft_aug" / "final"}
    scores = {name: evaluate(path, eval_task, args.limit, evals / name, log) for name, path in models.items()}
    blank = evaluate(models["vrft_aug"], eval_task, args.limit, evals / "vrft_aug-blank", log, ablate="blank")
    return {"seed": seed, "early_step": step, "early_validation": early_val, "scores": scores,
            "blank": blank, "reward": quarter_rewards(out / "vrft_aug"), "train_seconds": times}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    split = "validation copy (phantom seed 7)" if args.validate else "test split (phantom seed 0)"
    print(f"{TASK} ({PROMPT}), {split}, first {args.limit} samples; "
          "MFRS (1, 1/4, 1/16 for 0, 1, 2 grades off)")
    rows = []
    for r in results:
        s = r["scores"]
        labels = (("early", f"SFT early (step {r['early_step']})"), ("vrft_aug", "vrft_aug from early"),
                  ("sft", "SFT (600 steps)"))
        for name, label in labels:
            v = s[name]
            rows.append([r["seed"], label, f"{v['mfrs']:.3f}", f"[{v['mfrs_low']:.3f}, {v['mfrs_high']:.3f}]",
                         f"{100 * v['accuracy']:.1f}", v["unparsed"],
                         f"{r['blank']['mfrs']:.3f}" if name == "vrft_aug" else "-",
                         "{:.3f} -> {:.3f}".format(*r["reward"]) if name == "vrft_aug" else "-",
                         f"{r['train_seconds'].get(name, 0):.0f}" if name != "early" else "-"])
    print(tabulate(rows, headers=["seed", "model", "MFRS", "95% interval", "grade acc %", "unparsed",
                                  "blank image: MFRS", "train MFRS reward: first -> last quarter",
                                  "train s"], tablefmt="github"))
    print()
    def yes(ok: bool) -> str:
        return "yes" if ok else "NO"

    checks = [["vrft_aug MFRS > SFT early",
               *(yes(r["scores"]["vrft_aug"]["mfrs"] > r["scores"]["early"]["mfrs"]) for r in results)],
              ["train MFRS reward: last quarter > first",
               *(yes(r["reward"][1] > r["reward"][0]) for r in results)]]
    print(tabulate(checks, headers=["target", *(f"seed {r['seed']}" for r in results)], tablefmt="github"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/learning-vrft"))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated: model init, data order, sampling")
    parser.add_argument("--limit", type=int, default=200, help="samples scored per evaluation")
    parser.add_argument("--validate", action="store_true",
                        help="score on the validation copy (phantom seed 7), not the test split")
    args = parser.parse_args()
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    val_task = validation_copy(args.output, TASK)
    eval_task = str(val_task) if args.validate else TASK
    t0 = time.perf_counter()
    results = [run_seed(int(seed), args, val_task, eval_task) for seed in args.seeds.split(",")]
    report(results, args)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; commands and their output: "
          f"{args.output}/seed-*/commands.log")
    name = "learning-vrft-validation.json" if args.validate else "learning-vrft.json"
    (args.output / name).write_text(json.dumps({"validate": args.validate, "limit": args.limit,
                                                "results": results}, indent=1))


if __name__ == "__main__":
    main()
