"""`medharness train` and `medharness reward`; `harness/cli.py` adds these through `add_commands(sub)`.
Nothing heavy is imported until a command runs."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medharness.core.errors import ConfigError, DataError
from medharness.core.schemadocs import field_help
from medharness.trainers import preset_names

# the schemas the `train` flags set (their help: the fields' descriptions)
CONFIG, SAMPLES = "medharness.trainers.schema:TrainConfig", "medharness.trainers.schema:SamplesSpec"
EVAL, EVAL_SETTINGS = "medharness.trainers.evals:EvalRequest", "medharness.core.records:EvalSettings"

if TYPE_CHECKING:  # heavy: imported when a command runs
    from medharness.trainers.run import TrainRequest


def add_commands(sub: argparse._SubParsersAction) -> dict[str, Any]:
    """Add the training subcommands; returns {command: handler} for the main CLI's dispatch."""
    p = sub.add_parser("train",
                       help="train a model on a task with a TRL recipe (sft, dpo, grpo, vrft_aug, rarl; "
                            "LoRA an option)",
                       description="Train with a recipe (sft, dpo, grpo, vrft_aug, rarl) configured by "
                                   "presets (trainers/presets/*.yaml), --config FILE and -C overrides. "
                                   "Rewards are the task's own parser + metrics. See docs/training.md.")
    p.add_argument("--recipe",
                   help=field_help(CONFIG, "recipe") + "; default: the preset's or config's recipe")
    p.add_argument("--preset", action="append", default=[], metavar="NAME",
                   help="a shipped preset (repeatable, later wins; default: the recipe's own; `medharness ls "
                        "presets`): " + " ".join(preset_names()))
    p.add_argument("--config", type=Path, help="a recipe config YAML (strict; see docs/training.md)")
    p.add_argument("-C", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (dotted key), e.g. -C trl.learning_rate=1e-5 -C lora.r=16")
    p.add_argument("--task", help=field_help(CONFIG, "task"))
    p.add_argument("--model", help=field_help(CONFIG, "model"))
    p.add_argument("--prompt", help=field_help(CONFIG, "prompt"))
    p.add_argument("--data-dir", help=field_help(CONFIG, "data_dir"))
    p.add_argument("--samples", type=Path, help=field_help(SAMPLES, "file"))
    p.add_argument("--seed", type=int, help=field_help(CONFIG, "seed", default=True))
    p.add_argument("--max-steps", type=int, help="optimiser steps (trl.max_steps)")
    p.add_argument("--output", type=Path, help="output directory (default runs/train/<preset>-<task>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue --output from its last checkpoint-*")
    p.add_argument("--dry-run", action="store_true",
                   help="print the fully resolved config (every TRL setting, the rewards with their "
                        "weights, the data, the prompts) after the checks a run makes before its model "
                        "loads; no model is loaded, nothing is written")
    p.add_argument("--json", action="store_true", help="with --dry-run: print it as one JSON object")
    e = p.add_argument_group("evaluation during training (held-out samples, scored by the harness; "
                             "docs/training.md)")
    e.add_argument("--eval-every", type=int, metavar="N", help=field_help(EVAL, "every"))
    e.add_argument("--eval-checkpoints", action="store_true", help=field_help(EVAL, "checkpoints"))
    e.add_argument("--eval-tasks", metavar="TASKS", help=field_help(EVAL, "tasks"))
    e.add_argument("--eval-split", metavar="SPLIT", help=field_help(EVAL, "split"))
    e.add_argument("--eval-limit", type=int, metavar="N", help=field_help(EVAL_SETTINGS, "limit"))
    e.add_argument("--eval-backend", metavar="NAME", help=field_help(EVAL_SETTINGS, "backend", default=True))
    e.add_argument("--eval-batch-size", type=int, metavar="N",
                   help=field_help(EVAL_SETTINGS, "batch_size", default=True))
    from medharness.trainers.launch import add_launch_options

    add_launch_options(p)

    r = sub.add_parser("reward", help="print each reward component for given completions (as training would)",
                       description="Score completions with reward metrics through the task's parser, "
                                   "exactly as `train` rewards them and `run` scores them.")
    r.add_argument("--task", required=True)
    r.add_argument("--rewards", default="default",
                   help="'default' (the --recipe's rewards), a YAML list ([{metric: yes_no_accuracy, "
                        "weight: 0.9}, ...]) or a YAML file")
    r.add_argument("--recipe", help="whose default rewards to use (e.g. vrft_aug; default: grpo's)")
    r.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe option for the default rewards, e.g. --option recitation=0.2 (repeatable)")
    r.add_argument("--completions", type=Path, required=True,
                   help="JSONL of {sample_id, text}, or a text file of one completion per line with "
                        "--sample-id")
    r.add_argument("--sample-id", help="the sample every line of a plain text --completions file answers")
    r.add_argument("--prompt", help="the task's prompt variant (its parser reads the completions)")
    r.add_argument("--split", help="the split the sample ids come from (default: test, then train)")
    r.add_argument("--data-dir", help="the task's local data copy")
    r.add_argument("--model",
                   help="what a reward argument '@model' stands for (e.g. a length reward's tokenizer)")
    r.add_argument("--json", action="store_true", help="one JSON object per completion")
    return {"train": cmd_train, "reward": cmd_reward}


TRAIN_EXTRA = ("torch", "transformers", "trl", "peft", "datasets")


def require_train_extra() -> None:
    """A clear error, not an ImportError traceback, when the `train` extra is not installed."""
    import importlib.util

    missing = [name for name in TRAIN_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"training needs {', '.join(missing)}: pip install 'medharness[hf,train]'")


EVAL_FLAGS = (("--eval-every", "eval_every"), ("--eval-tasks", "eval_tasks"), ("--eval-split", "eval_split"),
              ("--eval-limit", "eval_limit"), ("--eval-backend", "eval_backend"),
              ("--eval-batch-size", "eval_batch_size"))


def eval_request(args: argparse.Namespace) -> Any:
    from medharness.trainers.evals import EvalRequest

    req = EvalRequest(every=args.eval_every, checkpoints=args.eval_checkpoints, tasks=args.eval_tasks,
                      split=args.eval_split, limit=args.eval_limit, backend=args.eval_backend or "auto",
                      batch_size=args.eval_batch_size or 8)
    given = (args.eval_tasks, args.eval_split, args.eval_limit, args.eval_backend, args.eval_batch_size)
    if not req.enabled and any(v is not None for v in given):
        raise ConfigError("--eval-tasks/--eval-split/--eval-limit/--eval-backend/--eval-batch-size need "
                          "--eval-every N or --eval-checkpoints")
    return req if req.enabled else None


def child_argv(args: argparse.Namespace, output: Path) -> list[str]:
    """The train command's argv for the launched processes: every option but the launch ones, --output fixed
    (a default output with a timestamp would differ between the launcher and the launched processes)."""
    argv = ["train", "--output", str(output)]
    for flag, value in (("--recipe", args.recipe), ("--config", args.config), ("--task", args.task),
                        ("--model", args.model), ("--prompt", args.prompt), ("--data-dir", args.data_dir),
                        ("--samples", args.samples),
                        ("--seed", args.seed), ("--max-steps", args.max_steps)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [x for preset in args.preset for x in ("--preset", preset)]
    argv += [x for item in args.overrides for x in ("-C", item)]
    argv += [x for flag, name in EVAL_FLAGS if getattr(args, name) is not None
             for x in (flag, str(getattr(args, name)))]
    return (argv + (["--eval-checkpoints"] if args.eval_checkpoints else [])
            + (["--resume"] if args.resume else []))


def parse_train_args(argv: Sequence[str]) -> argparse.Namespace:
    """`medharness train ARGS...` parsed as the command parses them (a sweep's dry run checks its cells'
    train commands through this)."""
    parser = argparse.ArgumentParser(prog="medharness")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    if args.command != "train":
        raise ConfigError(f"not a train command: {shlex.join(argv)}")
    return args


def train_request(args: argparse.Namespace) -> TrainRequest:
    """The TrainRequest of parsed `train` options."""
    from medharness.trainers.run import TrainRequest

    return TrainRequest(recipe=args.recipe, presets=args.preset, config_file=args.config,
                        overrides=args.overrides, task=args.task, model=args.model, prompt=args.prompt,
                        data_dir=args.data_dir, samples_file=args.samples, seed=args.seed,
                        max_steps=args.max_steps, output=args.output, resume=args.resume,
                        evals=eval_request(args))


def cmd_train(args: argparse.Namespace) -> int:
    if args.json and not args.dry_run:
        raise ConfigError("--json prints the --dry-run config: give --dry-run too")
    if args.dry_run:
        from medharness.trainers.launch import spec_from_args
        from medharness.trainers.run import dry_run

        spec = spec_from_args(args, use_cpu=False)  # contradictory launch options are refused as in a run
        info = dry_run(train_request(args), launch=spec if args.launcher == "accelerate" else None)
        print(json.dumps(info, indent=1) if args.json else dry_run_text(info))
        return 0
    require_train_extra()
    from medharness.trainers.launch import (
        check_trl_at_world_size,
        launch_from_args,
        spec_from_args,
        under_launcher,
    )
    from medharness.trainers.run import default_output, refuse_non_empty, resolve, train

    req = train_request(args)
    if args.launcher == "accelerate" and not under_launcher():
        config, layers = resolve(req)  # a bad config (TRL keys included) fails before anything is written
        output = args.output or default_output(config, layers)
        check_trl_at_world_size(config, layers, output, spec_from_args(args))  # TRL's keys at the world size
        if not args.resume and args.machine_rank == 0:  # machine R > 0 writes only launch/ into a shared OUT
            refuse_non_empty(output)
        argv = launch_from_args(args, child_argv(args, output), output)
        assert argv is not None
        print(f"launching: {shlex.join(argv)}", flush=True)
        return subprocess.call(argv)
    launch_from_args(args, [], args.output or Path())  # contradictory launch options are refused here too
    output = train(req, progress=lambda line: print(line, flush=True))
    written = [name for name in ("train.json", "logs.jsonl", "completions.jsonl", "evals/")
               if (output / name).exists()]
    print(f"finished: {output / 'final'} ({', '.join(written)} in {output})", flush=True)
    return 0


def dry_run_text(info: dict[str, Any]) -> str:
    """`train --dry-run` for a reader: the settings, the rewards and prompts, then every TRL setting (those
    the config sets first, with where each was set; then TRL's defaults)."""
    set_at: dict[str, str] = info["set_at"]
    samples, data, lora = info["samples"], info["data"], info["lora"]
    chosen = [f"split {samples['split']}", *([f"ids from {samples['file']}"] if samples["file"] else []),
              *(["class-balanced"] if samples["balanced"] else []),
              *([f"first {samples['limit']}"] if samples["limit"] else [])]
    count = f": {data['count']} samples" if data["count"] is not None else f" ({data.get('note')})"
    styles = f", prompt styles {info['prompt_styles']}" if info["prompt_styles"] else ""
    weights = (f"LoRA r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']} on "
               f"{', '.join(lora['target_modules'])}" if lora else "full fine-tune")
    frozen = lora["freeze_vision"] if lora else info["freeze_vision"]
    presets = ", ".join(info["presets"]) or "-"
    lines = [f"train dry run: recipe {info['recipe']}, presets {presets} (no model loaded, nothing written)",
             f"model:   {info['model']}",
             f"task:    {info['task']}, prompt {info['prompt']!r}{styles}",
             f"data:    {', '.join(chosen)}{count}",
             f"output:  {info['output']}" + (" (exists)" if info["output_exists"] else " (not created)"),
             f"seed:    {info['seed']}",
             f"weights: {weights}, vision tower {'frozen' if frozen else 'trained'}"]
    lines += [f"{key}: {info[key]}" for key in ("attn_implementation", "dtype", "max_pixels", "min_pixels",
                                                "ablate", "rejected") if key in set_at]
    if info["options"]:
        lines.append("options: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in info["options"].items()))
    if info["rewards"]:
        lines.append("rewards (summed by TRL with these weights):")
        lines += [f"  {r['label']:<24} x {r['weight']:g}   {r['metric']}"
                  + (f" {json.dumps(r['args'])}" if r["args"] else "") for r in info["rewards"]]
    for name, prompt in info["prompts"].items():
        lines.append(f"prompt {name!r}:")
        lines += [f"  {part}: {prompt[part]}" for part in ("system", "user") if prompt[part] is not None]
    if info["evaluation"]:
        lines.append("evaluation during training: " + ", ".join(
            f"{k}={v}" for k, v in info["evaluation"].items() if v is not None))
    trl = info["trl"]
    given = [k for k in trl if f"trl.{k}" in set_at]
    lines.append(f"TRL settings ({len(trl)}), set by the config ({len(given)}):")
    lines += [f"  {k} = {json.dumps(trl[k], default=str)}   ({set_at[f'trl.{k}']})" for k in given]
    lines.append("TRL's defaults and medharness's own:")
    lines += [f"  {k} = {json.dumps(v, default=str)}" for k, v in trl.items() if k not in given]
    lines += [f"note: {note}" for note in info["notes"]]
    return "\n".join(lines)


def _reward_specs(spec: str) -> Any:
    from medharness.core.yamlio import load_value, load_yaml_with_lines
    from medharness.trainers.rewards import parse_rewards

    if spec == "default":
        return None
    path = Path(spec)
    data = load_yaml_with_lines(path)[0] if path.is_file() else load_value(spec, "--rewards")
    if isinstance(data, dict) and "rewards" in data:
        data = data["rewards"]
    return parse_rewards(data, f"--rewards {spec}")


def read_completions(path: Path, sample_id: str | None) -> list[tuple[str, str]]:
    """(sample id, text) pairs: JSONL objects, or one completion per line for `--sample-id`."""
    from medharness.core.datafiles import parse_json, read_text

    if not path.exists():
        raise DataError(f"completions file {path} does not exist")
    lines = read_text(path, "completions file").splitlines()  # the common reader: regular file, UTF-8
    if sample_id is not None:
        return [(sample_id, line.replace("\\n", "\n")) for line in lines if line.strip()]
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        item = parse_json(path, line, number)  # names the line; deep nesting and huge integers refused
        try:
            sample, text = item["sample_id"], item["text"]
        except (KeyError, TypeError):
            raise DataError(f"{path}:{number}: expected a JSON object {{sample_id, text}} (or pass "
                            "--sample-id for a plain text file)") from None
        if not isinstance(sample, str) or not isinstance(text, str):  # never a stringified number or list
            raise DataError(f"{path}:{number}: sample_id and text must be strings (got "
                            f"{type(sample).__name__} and {type(text).__name__})")
        out.append((sample, text))
    return out


def recipe_rewards(recipe: str | None, options: list[str], task: Any, prompt: str) -> Any:
    """A recipe's default rewards for the task, with its `options:` from `--option KEY=VALUE` items."""
    from medharness.trainers.config import parse_override
    from medharness.trainers.rewards import default_rewards
    from medharness.trainers.schema import TrainConfig

    if recipe is None:
        if options:
            raise ConfigError("--option needs --recipe (whose options they are)")
        return default_rewards(task, prompt)
    from pydantic import ValidationError

    from medharness.trainers.recipes.base import recipe_class

    parsed: dict[str, Any] = {}
    for item in options:
        keys, value = parse_override(item)
        node = parsed
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    cls = recipe_class(recipe)
    try:
        cls.parse_options(parsed)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"--option: {bad}") from None
    return cls().default_rewards(task, prompt, TrainConfig(recipe=recipe, options=parsed)) or \
        default_rewards(task, prompt)


def cmd_reward(args: argparse.Namespace) -> int:
    from medharness.taskfiles.task import load_task
    from medharness.trainers.rewards import RewardSet

    overrides = {k: v for k, v in (("prompt", args.prompt), ("data_dir", args.data_dir)) if v}
    task = load_task(args.task, overrides)
    prompt = task.prompt_name
    given = _reward_specs(args.rewards)  # checked before any file is read
    pairs = read_completions(args.completions, args.sample_id)
    wanted = {sid for sid, _ in pairs}
    samples: dict[str, Any] = {}
    for split in [args.split] if args.split else ["test", "train"]:
        try:
            loaded = task.load_samples(split)
        except Exception as exc:  # noqa: BLE001 - a task without this split
            print(f"(split {split} not loaded: {exc})", file=sys.stderr)
            continue
        samples.update({s.id: s for s in loaded if s.id in wanted and s.id not in samples})
    missing = sorted(wanted - set(samples))
    if missing:
        raise ConfigError(f"task {task.name}: no sample(s) {missing[:5]} (use --split)")
    specs = given or recipe_rewards(args.recipe, args.option, task, prompt)
    rewards = RewardSet(task, prompt, specs, list(samples.values()), model=args.model)
    rows = []
    for sid, text in pairs:
        answer, comps = rewards.score(samples[sid], text)
        rows.append({"sample_id": sid, "text": text, "answer": answer.value, "rewards": comps,
                     "total": rewards.total(comps)})
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    from tabulate import tabulate

    table = [{"sample_id": r["sample_id"], "answer": r["answer"], **r["rewards"], "total": r["total"]}
             for r in rows]
    weights = ", ".join(f"{lab} x {w:g}" for lab, w in zip(rewards.labels, rewards.weights))
    print(f"task {task.name}, prompt '{prompt}', total = {weights} (a missing component's weight is "
          "shared out over the others in proportion)", file=sys.stderr)
    print(tabulate(table, headers="keys", tablefmt="github", missingval="n/a"))
    return 0
