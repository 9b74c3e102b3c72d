"""The options of `medharness import` and `medharness export` (docs/ecosystem.md); the commands themselves are
in the CLI (`cli.cmd_import`, `cli.cmd_export`), which may print run summaries."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

TOOLS = ("lm-eval", "lmms-eval", "vlmevalkit")


def add_commands(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser("import", help="a peer tool's per-sample outputs (lm-eval, lmms-eval, VLMEvalKit) -> "
                                      "a run directory, scored by medharness",
                       description="Import another tool's predictions into a run directory: the raw text of "
                                   "each row becomes the generation, scored by the task's own recipe; the "
                                   "file, the model, the peer's version and the match counts go to run.json.")
    p.add_argument("file", type=Path, help="lm-eval samples_<task>_<time>.jsonl, lmms-eval "
                                           "<time>_samples_<task>.jsonl, or VLMEvalKit "
                                           "<model>_<dataset>.xlsx/.tsv")
    p.add_argument("--from", dest="tool", required=True, choices=TOOLS)
    p.add_argument("--task", required=True, help="the medharness task (name or YAML path) the rows answer")
    p.add_argument("--output", type=Path, required=True, help="the run directory to write (must not exist)")
    p.add_argument("--data-dir", help="the task's local data folder")
    p.add_argument("-T", dest="overrides", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help="task setting, e.g. -T vqa_rad.prompt=r1 (the prompt variant the peer was given)")
    p.add_argument("--id-field", default="id", help="lm-eval/lmms-eval: the doc field holding the sample id "
                                                    "(default id, as exported)")
    p.add_argument("--id-map", type=Path, help="VLMEvalKit: the export's ids.tsv (index -> id); lmms-eval: "
                                               "the export's docs.jsonl (doc_id = row number), its logs "
                                               "drop the doc")
    p.add_argument("--model-name", help="the model's name (default: what the peer's results file says)")
    p.add_argument("--peer-version", help="the peer's version (default: what its results file says)")
    p.add_argument("--allow-unmatched", action="store_true",
                   help="import the rows that match the task even when some do not (they are counted)")
    p.add_argument("--label", help="a human name for this run on leaderboards")

    e = sub.add_parser("export",
                       help="write a medharness task as a folder lm-eval, lmms-eval or VLMEvalKit runs",
                       description="Export a task: prompts rendered by medharness, images, the peer's task "
                                   "file or TSV, and a README on running it and importing the output back.")
    e.add_argument("task", help="task name or YAML path")
    e.add_argument("--to", dest="tool", required=True, choices=TOOLS)
    e.add_argument("--output", type=Path, required=True, help="folder to write (new or empty)")
    e.add_argument("--data-dir", help="the task's local data folder")
    e.add_argument("-T", dest="overrides", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help="task setting, e.g. -T vqa_rad.prompt=r1")
    e.add_argument("--limit", type=int, help="only the first N samples")
    return {"import": cmd_import, "export": cmd_export}


def cmd_import(args: argparse.Namespace) -> int:
    from medharness.bridges.importer import ImportRequest, import_predictions
    from medharness.cli_output import print_run_summary
    from medharness.core.display import plain
    from medharness.taskfiles.task import overrides_for

    run = import_predictions(ImportRequest(
        tool=args.tool, file=args.file, task=args.task, output=args.output, data_dir=args.data_dir,
        overrides=overrides_for(args.task, args.overrides), model_name=args.model_name,
        tool_version=args.peer_version, id_field=args.id_field, id_map=args.id_map,
        allow_unmatched=args.allow_unmatched, label=args.label))
    for name, entry in run.log.tasks.items():
        o = entry.origin
        if o is not None:
            print(f"{args.file}: {o.n_matched} of {o.n_rows} rows matched task {name} ({o.n_task_samples} "
                  f"samples; {o.n_unmatched} unmatched rows left out); model "
                  f"{plain(run.log.model or '')}", file=sys.stderr)
    print_run_summary(run)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from medharness.bridges.export import export_task
    from medharness.taskfiles.task import overrides_for

    main = export_task(args.tool, args.task, args.output, data_dir=args.data_dir,
                       overrides=overrides_for(args.task, args.overrides), limit=args.limit)
    print(f"wrote {args.output} ({main.name}; see README.md there)")
    return 0
