"""The `medharness` command line. Heavy imports happen inside commands, so `--help` stays fast."""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medharness.core.errors import ConfigError, DataError, MedHarnessError
from medharness.core.schemadocs import field_help

RUN = "medharness.core.records:RunSettings"  # the settings the `run` flags set (their help: its descriptions)

EPILOG = "Docs: README.md and docs/ in the repository. Every command has --help."
Handler = Callable[[argparse.Namespace], int]


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate answers for tasks with a model and score them",
                       description="Run a model on tasks; results go to a run directory (resumable).")
    p.add_argument("--model", required=True, help=field_help(RUN, "model"))
    p.add_argument("--backend", default="auto", help=field_help(RUN, "backend"))
    p.add_argument("--tasks", required=True, help=field_help(RUN, "tasks") + "; lm_eval:NAME runs lm-eval's "
                                                  "task NAME (docs/ecosystem.md)")
    p.add_argument("--lm-eval-include-path",
                   help="a folder of local lm-eval task YAMLs for lm_eval:NAME tasks")
    p.add_argument("--data-dir", help=field_help(RUN, "data_dir"))
    p.add_argument("-T", dest="overrides", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help=field_help(RUN, "overrides"))
    p.add_argument("--limit", type=int, help=field_help(RUN, "limit"))
    p.add_argument("--batch-size", type=int, default=8,
                   help=field_help(RUN, "batch_size") + " (default %(default)s)")
    p.add_argument("--max-new-tokens", type=int, help=field_help(RUN, "max_new_tokens"))
    p.add_argument("--temperature", type=float, help=field_help(RUN, "temperature"))
    p.add_argument("--seed", type=int, default=0, help=field_help(RUN, "seed") + " (default %(default)s)")
    p.add_argument("--output", type=Path, help="run directory (default runs/<time>-<model>)")
    p.add_argument("--label", help=field_help(RUN, "label"))
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output where it stopped (same settings and task definitions), "
                        "or take over a directory it left without results")
    p.add_argument("--retry-errors", action="store_true",
                   help="with --resume: generate again the samples whose generation failed (e.g. API errors)")
    p.add_argument("--max-error-rate", type=float, default=0.5,
                   help=field_help(RUN, "max_error_rate") + " (default %(default)s)")
    p.add_argument("--ablate", choices=["blank", "noise", "shuffle"], help=field_help(RUN, "ablate"))
    p.add_argument("--samples", dest="samples_file", type=Path, help=field_help(RUN, "samples_file"))
    p.add_argument("--no-cache", action="store_true", help=field_help(RUN, "cache"))
    p.add_argument("--cache-dir", help=field_help(RUN, "cache_dir"))
    p.add_argument("--base-url", help="openai/gemini backends: the endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", help="openai/gemini: the environment variable holding the key "
                                         "(default OPENAI_API_KEY; GEMINI_API_KEY or GOOGLE_API_KEY)")
    p.add_argument("--concurrency", type=int, help="openai/gemini: requests in flight (default 8)")
    p.add_argument("--timeout", type=float, help="openai/gemini: seconds per attempt (default 60)")
    p.add_argument("--max-retries", type=int,
                   help="openai/gemini: retries after 429/5xx/timeouts (default 5)")
    p.add_argument("--backend-option", dest="backend_option", action="append", default=[],
                   metavar="KEY=VALUE", help=field_help(RUN, "backend_options"))
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where the model runs: local (this process, default) or ray (--replicas engines of "
                        "the hf or vllm backend as Ray actors; same rows, cache, --resume; docs/scaling.md)")
    p.add_argument("--replicas", type=int,
                   help="--executor ray: engines (default one per GPU, or per tensor_parallel_size GPUs, of "
                        "the Ray cluster; 1 without GPUs)")
    p.add_argument("--ray-address",
                   help="--executor ray: the cluster to join (auto: the one `ray start` runs here; "
                        "HOST:PORT; ray://HOST:10001); default $RAY_ADDRESS, else a new local Ray instance")
    p.add_argument("--device", help="hf backend: cpu, cuda, auto (default auto)")
    p.add_argument("--dtype", help="hf backend: float32, bfloat16, auto (default auto)")
    p.add_argument("--id-field", help="replay backend: the predictions file's id field")
    p.add_argument("--prediction-field", help="replay backend: the predictions file's text field")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar or periodic progress lines: one line per finished task")
    _add_judge_options(p, inline=True)


def _add_judge_options(p: argparse.ArgumentParser, inline: bool = False) -> None:
    when = "judge the answers when the run finishes: " if inline else ""
    p.add_argument("--judges", help=when + "SPEC:BACKEND:MODEL[,...], e.g. rarl_v1:openai:gpt-4o-mini "
                                          "(see `medharness ls judges`)")
    p.add_argument("--judge-config", type=Path,
                   help=when + "a YAML list of judges (name, spec, backend, model, base_url, api_key_env, "
                               "options)")
    p.add_argument("--judge-base-url", help="--judges shorthand: the endpoint of its openai/gemini judges")
    p.add_argument("--judge-api-key-env", help="--judges shorthand: the variable holding its judges' key")


def _panel(args: argparse.Namespace) -> list[Any]:
    from medharness.judges.panel import panel_from_args

    return panel_from_args(args.judge_config, args.judges, args.judge_base_url, args.judge_api_key_env)


def _judge_run(run: Any, panel: list[Any], args: argparse.Namespace, tasks: list[str] | None = None) -> None:
    from medharness.cli_output import print_judging, progress_bar
    from medharness.judges.audit import write_disagreements
    from medharness.judges.judging import Judging

    with progress_bar(disabled=args.no_progress) as progress:
        usage = Judging(run, panel, tasks=tasks, cache=not args.no_cache,
                        cache_dir=Path(args.cache_dir) if args.cache_dir else None, progress=progress).run()
    path, n = write_disagreements(run, tasks)
    print_judging(run, usage, path, n)


def cmd_run(args: argparse.Namespace) -> int:
    from medharness.runs.pipeline import RunConfig, Runner
    from medharness.taskfiles.task import parse_task_overrides

    options = {"device": args.device, "dtype": args.dtype, "id_field": args.id_field,
               "prediction_field": args.prediction_field, "base_url": args.base_url,
               "api_key_env": args.api_key_env, "concurrency": args.concurrency, "timeout": args.timeout,
               "max_retries": args.max_retries}
    backend_options = {k: v for k, v in options.items() if v is not None}
    from medharness.core.yamlio import load_value

    for item in args.backend_option:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--backend-option expects KEY=VALUE, got {item!r}")
        backend_options[key] = load_value(value, f"--backend-option {key}")
    if args.resume and not args.output:
        raise ConfigError("--resume needs --output RUN_DIR (the run to continue)")
    executor = _executor(args)
    from pydantic import ValidationError

    from medharness.bridges.lmeval_run import split_tasks

    ours, lm_eval_tasks = split_tasks(args.tasks)
    if lm_eval_tasks and executor is not None:
        raise ConfigError("--executor ray scores medharness tasks; lm_eval: tasks run in this process "
                          "(leave out --executor)")
    try:
        config = RunConfig(model=args.model, backend=args.backend, tasks=ours or args.tasks,
                           data_dir=args.data_dir, overrides=parse_task_overrides(args.overrides),
                           limit=args.limit, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, seed=args.seed, backend_options=backend_options,
                           max_error_rate=args.max_error_rate, ablate=args.ablate,
                           samples_file=str(args.samples_file) if args.samples_file else None,
                           cache=not args.no_cache, cache_dir=args.cache_dir, label=args.label)
    except ValidationError as exc:
        raise ConfigError(option_errors(exc)) from None
    from medharness.cli_output import print_run_summary, progress_bar

    panel = _panel(args)  # a bad judge config fails before the model runs
    run = None
    if ours:
        with progress_bar(disabled=args.no_progress) as progress:
            runner = Runner(config, output=args.output, resume=args.resume, progress=progress,
                            retry_errors=args.retry_errors, executor=executor)
            try:
                run = runner.run()
            except MedHarnessError:
                from medharness.runs.runlog import RUN_FILE, RunDir

                # a run that stopped: what it has, then why
                if runner.started and (runner.path / RUN_FILE).is_file():
                    print_run_summary(RunDir.open(runner.path))
                raise
    if lm_eval_tasks:
        run = _run_lm_eval(args, config, lm_eval_tasks, run.path if run else None)
    assert run is not None
    print_run_summary(run)
    if panel:
        from medharness.runs.runlog import RunDir

        with RunDir.open(run.path, writer="judge") as judged:
            _judge_run(judged, panel, args)
    return 0


def _executor(args: argparse.Namespace) -> Any:
    """`--executor ray` -> where its replicas run (backends/ray_replicas.py); None: in this process."""
    if args.executor != "ray":
        if args.replicas is not None or args.ray_address:
            raise ConfigError("--replicas and --ray-address need --executor ray")
        return None
    from medharness.backends.ray_replicas import RayExecutor

    return RayExecutor(replicas=args.replicas, address=args.ray_address)


def _run_lm_eval(args: argparse.Namespace, config: Any, tasks: list[str], path: Path | None) -> Any:
    """`--tasks lm_eval:NAME`: lm-eval runs its tasks on the checkpoint into the same run directory."""
    from medharness.bridges.lmeval_run import run_lm_eval_tasks
    from medharness.runs.pipeline import default_run_id, pick_backend
    from medharness.runs.runlog import RunDir

    if pick_backend(config.model, config.backend)[0] not in ("hf", "vllm"):
        raise ConfigError("lm_eval: tasks run a local checkpoint with lm-eval; --model must be a model "
                          "folder or id")
    if path is not None:
        run = RunDir.open(path, writer="run lm_eval")
    elif args.resume:
        run = RunDir.open(args.output, writer="run --resume")
    else:
        path = args.output or Path("runs") / default_run_id(config)
        run = RunDir.create(path, config, seed=config.seed, label=config.label)
    with run:
        try:
            run_lm_eval_tasks(run, config.model, tasks, include_path=args.lm_eval_include_path,
                              limit=config.limit, batch_size=config.batch_size, device=args.device,
                              dtype=args.dtype, seed=config.seed)
        except Exception as exc:
            run.set_status("failed", f"lm-eval: {type(exc).__name__}: {exc}")
            raise
        run.set_status("finished")
    return RunDir.open(run.path)


_FLAGS = {"samples_file": "--samples", "backend_options": "--backend-option", "overrides": "-T",
          "cache": "--no-cache", "model": "--model"}


def option_errors(exc: Any) -> str:
    """A RunConfig ValidationError as the options the user typed: '--limit -5: Input should be greater than or
    equal to 1'."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        flag = _FLAGS.get(field, "--" + field.replace("_", "-")) if field else "options"
        got = err.get("input")
        value = f" {got}" if field and not isinstance(got, dict) and got is not None else ""
        lines.append(f"{flag}{value}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid option(s)\n  " + "\n  ".join(lines)


def _add_judge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="LLM judges score a finished run's answers (no original model needed)",
                       description="Each judge gives a verdict per sample; verdicts go to "
                                   "RUN_DIR/judgements/<task>.jsonl, judge and panel columns to run.json "
                                   "(shown by `leaderboard`), the samples they disagree on to "
                                   "judgements/disagreements.md. Already judged samples and cached verdicts "
                                   "cost nothing; failed verdicts are retried.")
    p.add_argument("run_dir", type=Path)
    _add_judge_options(p)
    p.add_argument("--tasks", help="comma-separated tasks of the run (default: all)")
    p.add_argument("--no-cache", action="store_true",
                   help="always call the judges (default: reuse cached verdicts)")
    p.add_argument("--cache-dir",
                   help="verdict cache folder (default $MEDHARNESS_CACHE or ~/.cache/medharness)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar or periodic progress lines: one line per finished task")


def _run_tasks(run: Any, tasks: str | None) -> list[str] | None:
    """`--tasks a,b` of a run directory (None = all); a task the run does not have is an error."""
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    unknown = set(names or []) - set(run.tasks())
    if unknown:
        raise ConfigError(f"{run.path} has no samples for task(s) {sorted(unknown)}; it has {run.tasks()}")
    return names


def cmd_judge(args: argparse.Namespace) -> int:
    from medharness.runs.runlog import RunDir

    with RunDir.open(args.run_dir, writer="judge") as run:  # judging appends: one writer at a time
        panel = _panel(args)
        if not panel:
            raise ConfigError("judge needs --judges SPEC:BACKEND:MODEL[,...] or --judge-config FILE")
        _judge_run(run, panel, args, _run_tasks(run, args.tasks))
    return 0


def _add_agreement(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agreement", help="how far to trust a run's judges: agreement statistics with CIs",
                       description="Per task and judge spec: percent agreement, Fleiss' kappa, "
                                   "Krippendorff's alpha and Gwet's AC1 for the panel; Cohen's kappa "
                                   "(weighted for ordinal scales) per pair; each judge against the "
                                   "rule-based metric and, with --human, against human labels (with ICC). "
                                   "95% bootstrap intervals.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--tasks", help="comma-separated tasks (default: every judged task)")
    p.add_argument("--field", help="verdict field (default: each spec's primary one, e.g. prediction_score)")
    p.add_argument("--human", type=Path, help="human labels: CSV or JSONL with id, label (and task)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument("--output", type=Path, help="write the report here instead of printing it")


def cmd_agreement(args: argparse.Namespace) -> int:
    import json

    from medharness.judges.agreement import to_json, to_markdown
    from medharness.judges.audit import agreement_reports, write_disagreements
    from medharness.runs.runlog import RunDir

    run = RunDir.open(args.run_dir)
    tasks = _run_tasks(run, args.tasks)
    reports = agreement_reports(run, tasks, args.field, args.human, args.bootstrap, args.seed)
    if args.json:
        text = json.dumps([to_json(r) for r in reports], indent=2) + "\n"
    else:
        text = "\n".join(f"## {r['task']} · {r['spec']} ({', '.join(r['judges'])})\n\n" + to_markdown(r)
                         + "".join(f"\nNote: {n}.\n" for n in r["notes"]) for r in reports)
    path, n = write_disagreements(run, tasks)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    print(f"{n} disagreeing sample(s) listed in {path}", file=sys.stderr)
    return 0


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a predictions file, or re-score a run directory",
                       description="`score RUN_DIR` re-scores a run from its samples (no model, no images); "
                                   "`score --task T --predictions FILE` scores an external predictions file.")
    p.add_argument("run_dir", nargs="?", type=Path, help="a run directory to re-score")
    p.add_argument("--task", help="task name or YAML path (with --predictions)")
    p.add_argument("--predictions", type=Path, help=".jsonl, .json list or .csv with an id and a prediction")
    p.add_argument("--id-field", help="id field (default: the first of id, qid, sample_id, question_id)")
    p.add_argument("--prediction-field",
                   help="text field (default: the first of prediction, pred, response, output, answer, text)")
    p.add_argument("--convention",
                   help="scoring convention (default: the task's declared one); see `ls conventions`")
    p.add_argument("--data-dir", help="local copy of the task's dataset (with --predictions)")
    p.add_argument("-T", dest="overrides", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help="per-task setting, e.g. -T slake.filter.q_lang=zh")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes that re-score a run directory's large task (default: the CPUs; a task is "
                        "split only where each gets 20,000 rows or more)")
    p.add_argument("--allow-partial", action="store_true",
                   help="score a predictions file that matches under 95%% of the task's samples (matched "
                        "only)")


def cmd_score(args: argparse.Namespace) -> int:
    from medharness.cli_output import print_summaries
    from medharness.runs.rescore import score_predictions, score_run
    from medharness.taskfiles.task import parse_task_overrides

    if args.run_dir and args.predictions:
        raise ConfigError("give either RUN_DIR or --task with --predictions, not both")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {args.workers}")
    if args.run_dir:
        summaries = score_run(args.run_dir, args.convention, workers=args.workers)
    elif args.predictions and args.task:
        overrides = parse_task_overrides(args.overrides)
        summary, match = score_predictions(args.task, args.predictions, convention=args.convention,
                                           data_dir=args.data_dir, id_field=args.id_field,
                                           prediction_field=args.prediction_field, overrides=overrides,
                                           allow_partial=args.allow_partial)
        print(f"{args.predictions}: matched {match['matched']} of {match['task_samples']} task samples; "
              f"{match['unmatched_predictions']} predictions match no sample; only matched samples are "
              "scored",
              file=sys.stderr)
        summaries = [summary]
    else:
        raise ConfigError("score needs RUN_DIR, or --task TASK --predictions FILE")
    print_summaries(summaries, as_json=args.json)
    return 0


def _add_gate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gate", help="regression gate: is a candidate run worse than a baseline on the same items?",
        description="Exit 0: no task worse beyond the tolerance and the paired test; 1: a task is worse by "
                    "more than --max-drop points AND the paired test (Holm-corrected across tasks) says so "
                    "at --alpha; 2: the runs cannot be compared (reason given). See docs/regression-gate.md.")
    p.add_argument("--baseline", type=Path, help="run directory or gate summary file (--write-summary)")
    p.add_argument("--candidate", type=Path, help="run directory or gate summary file")
    p.add_argument("--metric", help="metric label to gate on (default: each task's first per-sample metric)")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="tolerated loss in points (x100 for percent metrics; default 1.0)")
    p.add_argument("--alpha", type=float, default=0.05, help="level of the paired test (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON instead of Markdown")
    p.add_argument("--write-summary", type=Path, metavar="RUN_DIR",
                   help="instead: write RUN_DIR's per-sample metric values (no text) to --output, as a "
                        "baseline")
    p.add_argument("-o", "--output", type=Path, help="with --write-summary: the summary file")


def cmd_gate(args: argparse.Namespace) -> int:
    import json

    from medharness.cli_output import gate_markdown
    from medharness.runs.gate import compare, load_side, write_summary

    if args.write_summary:
        if not args.output or args.baseline or args.candidate:
            raise ConfigError("--write-summary RUN_DIR needs -o FILE (and no --baseline/--candidate)")
        summary = write_summary(args.write_summary, args.output)
        n = sum(len(t.samples) for t in summary.tasks.values())
        print(f"wrote {args.output}: {len(summary.tasks)} task(s), {n} samples' metric values")
        return 0
    if not args.baseline or not args.candidate:
        raise ConfigError("gate needs --baseline and --candidate (or --write-summary RUN_DIR -o FILE)")
    try:
        result = compare(load_side(args.baseline), load_side(args.candidate), args.metric,
                         args.max_drop, args.alpha)
    except MedHarnessError:
        raise
    except Exception as exc:  # exit 1 means "worse": a failure to compare must never read as a verdict
        raise DataError(f"gate: the runs could not be compared ({type(exc).__name__}: {exc})") from exc
    if args.json:
        from medharness.runs.runlog import json_safe

        print(json.dumps(json_safe(result.to_json()), indent=2))
    else:
        print(gate_markdown(result, str(args.baseline), str(args.candidate)))
    return result.exit_code


def _add_ls(sub: argparse._SubParsersAction) -> None:
    from medharness.listings import LISTERS

    p = sub.add_parser("ls", help=f"list what is registered or shipped: {', '.join(LISTERS)}")
    p.add_argument("what", nargs="?", default="tasks", choices=list(LISTERS))


def cmd_ls(args: argparse.Namespace) -> int:
    from medharness.listings import print_listing

    print_listing(args.what)
    return 0


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check task files (all shipped ones by default)")
    p.add_argument("files", nargs="*", type=Path, help="task YAML files")


def cmd_validate(args: argparse.Namespace) -> int:
    from medharness.cli_output import validate_files

    return validate_files(args.files)


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="write a seeded k-shot subset's sample ids (for trainers and --samples)",
                       description="k samples per class from a task's split, chosen by sha256(seed:id): "
                                   "stable across runs, and the 10-shot set is inside the 20-shot set.")
    p.add_argument("--task", required=True)
    p.add_argument("--kshot", type=int, required=True, help="samples per class")
    p.add_argument("--by", metavar="FIELD",
                   help="stratify by this meta field (e.g. answer_type) instead of the gold answer")
    p.add_argument("--split", default="train", help="split to draw from (default train)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="local copy of the dataset")
    p.add_argument("--output", type=Path, required=True, help="JSON file {task: [ids]}")


def cmd_split(args: argparse.Namespace) -> int:
    from medharness.taskfiles.splits import kshot, write_sample_ids
    from medharness.taskfiles.task import load_task

    task = load_task(args.task, {"data_dir": args.data_dir} if args.data_dir else {})
    samples = task.load_samples(args.split)
    if args.by and not any(args.by in s.meta for s in samples):
        raise ConfigError(f"--by {args.by}: no sample of {task.name} has that field")
    label = (lambda s: s.meta.get(args.by)) if args.by else (lambda s: s.target)
    chosen = kshot(samples, args.kshot, args.seed, label)
    write_sample_ids(args.output, task.name, chosen)
    per = f"per {args.by}" if args.by else "per class"
    print(f"wrote {len(chosen)} {args.split} sample ids ({args.kshot} {per}, seed {args.seed}) to "
          f"{args.output}")
    return 0


def _add_tiny(sub: argparse._SubParsersAction) -> None:
    from medharness.checkpoints.tiny import ARCHS, ROPES, SIZES  # light: torch is imported on build

    p = sub.add_parser("make-tiny-model",
                       help="build a tiny random-weight VLM offline (for smoke tests and CI)")
    p.add_argument("dir", type=Path)
    p.add_argument("--arch", default="qwen2_vl", choices=ARCHS)
    p.add_argument("--size", default="tiny", choices=list(SIZES),
                   help="tiny (default, ~0.23 M params) or small (~2 M params: learns the phantom tasks on "
                        "a CPU)")
    p.add_argument("--rope", default="qwen", choices=list(ROPES),
                   help="the text model's multimodal rotary embedding: qwen (default, Qwen2-VL's own: image "
                        "tokens are not told apart by place) or grid (same weights; they are: for box tasks)")
    p.add_argument("--seed", type=int, default=0)


def cmd_tiny(args: argparse.Namespace) -> int:
    from medharness.checkpoints.tiny import build_tiny_vlm

    path = build_tiny_vlm(args.dir, arch=args.arch, seed=args.seed, size=args.size, rope=args.rope)
    print(f"built a {args.size} {args.arch} ({args.rope} rope) in {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """The evaluation commands (this module)."""
    for add in (_add_run, _add_score, _add_ls, _add_validate, _add_split, _add_tiny, _add_judge,
                _add_agreement, _add_gate):
        add(sub)
    return {"run": cmd_run, "score": cmd_score, "ls": cmd_ls, "validate": cmd_validate, "split": cmd_split,
            "make-tiny-model": cmd_tiny, "judge": cmd_judge, "agreement": cmd_agreement, "gate": cmd_gate}


def command_modules() -> list[Any]:
    """The modules that add commands, in `--help`'s order. The one way to add a command: a module with
    `add_commands(sub) -> {name: handler}` listed here, its heavy imports inside the handlers (so `--help`
    stays fast; a test checks what it imports)."""
    from medharness.bridges import cli as bridges_cli
    from medharness.leaderboards import cli as boards_cli
    from medharness.trainers import cli as train_cli
    from medharness.trainers import merge
    from medharness.trainers.sweeps import cli as sweep_cli

    return [merge, sweep_cli, sys.modules[__name__], boards_cli, train_cli, bridges_cli]


COMMANDS: dict[str, Handler] = {}  # filled by build_parser: command name -> handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medharness", epilog=EPILOG,
                                     description="Evaluate medical vision-language models on medical "
                                                 "benchmarks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    from medharness import __version__

    parser.add_argument("--version", action="version", version=f"medharness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules():
        COMMANDS.update(module.add_commands(sub))
    return parser


# Run as the program, these commands end without the interpreter's teardown (`_exit_now`): freeing every
# imported module and object does nothing a finished command needs (~0.15 s CPU after `score`, ~0.85 s after a
# `run` that imported torch and transformers). `score` makes no cyclic garbage worth collecting, so its
# process also runs without the cyclic garbage collector (whose passes over the imported modules' objects cost
# it ~0.07 s).
QUICK_EXIT = frozenset({"score", "run"})
NO_COLLECTOR = frozenset({"score"})


def main(argv: list[str] | None = None) -> int:
    program, collecting = argv is None, gc.isenabled()  # program: the console script or python -m
    if program:
        gc.disable()  # until the command is known
    args = build_parser().parse_args(argv)
    if program and args.command not in NO_COLLECTOR and collecting:
        gc.enable()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    code = _dispatch(args)
    if program and args.command in QUICK_EXIT:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process at once, as an ordinary exit would end it but without the teardown: the exit handlers
    run first (the log handlers' flush, Ray's and multiprocessing's shutdown, ...), then what was printed is
    flushed. Where a thread that is no daemon still runs, the ordinary exit (which waits for it) takes over. A
    reader that went away is no error (as in `_dispatch`); where a flush fails otherwise, the ordinary exit
    reports it."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()  # each handler runs once: the ordinary exit, should it follow, finds none left
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os._exit(code)
    except (OSError, ValueError):
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except MedHarnessError as exc:
        print(f"medharness {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume --output RUN_DIR", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`medharness ls | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
