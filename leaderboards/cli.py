"""`medharness leaderboard` and `medharness report` (pandas, tabulate, matplotlib load inside the
commands)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> dict[str, Any]:
    p = sub.add_parser(
        "leaderboard", help="a board of runs x tasks (Markdown, CSV or JSON; plots) from run directories",
        description="Rows are run directories (RUNS, and the board spec's rows); columns each task's primary "
                    "metric, or what the board spec says. Folders that are no run directory are skipped with "
                    "a note; failed runs are left out and listed. See docs/leaderboards.md.")
    p.add_argument("run_dirs", nargs="*", type=Path, metavar="RUNS", help="run directories (one row each)")
    p.add_argument("--board",
                   help="a board spec: a YAML file, or the name of a shipped one (leaderboards/boards/)")
    from medharness.core.schemadocs import field_help  # the board spec's fields, without importing its schema

    spec = "medharness.leaderboards.spec:BoardSpec"
    p.add_argument("--by", metavar="GROUP", help=field_help(spec, "by"))
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    p.add_argument("--plot", type=Path, metavar="DIR", help="also write PNG plots into DIR")
    p.add_argument("--output", type=Path, help="write the board here instead of printing it")
    p.add_argument("--all-metrics", action="store_true", help=field_help(spec, "all_metrics"))
    p.add_argument("--no-judges", action="store_true", help=field_help(spec, "judges"))
    p.add_argument("--no-intervals", action="store_true", help=field_help(spec, "intervals"))
    r = sub.add_parser("report", help="one run's report: a Markdown page with intervals, groups, failures, "
                                      "judge disagreements and ablation deltas, plus PNGs",
                       description="Writes OUTPUT/report.md and its PNGs; nothing else is written.")
    r.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    r.add_argument("--ablated", type=Path, metavar="RUN_DIR",
                   help="a run of the same model with --ablate (blank, noise, shuffle): adds paired deltas")
    r.add_argument("--output", type=Path, required=True, help="a folder for report.md and its PNGs")
    r.add_argument("--max-samples", type=int, default=20,
                   help="unparsed / failed samples listed per task (20)")
    return {"leaderboard": cmd_leaderboard, "report": cmd_report}


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from medharness.core.errors import ConfigError
    from medharness.leaderboards.board import build
    from medharness.leaderboards.render import FORMATS
    from medharness.leaderboards.spec import DEFAULT, load_board

    spec = load_board(args.board) if args.board else DEFAULT
    changes: dict[str, Any] = {}
    if args.by:
        changes["by"] = args.by
    if args.all_metrics:
        changes["all_metrics"] = True
    if args.no_judges:
        changes["judges"] = False
    if args.no_intervals:
        changes["intervals"] = False
    spec = spec.model_copy(update=changes)
    if not args.run_dirs and not spec.rows:
        raise ConfigError("no rows: give run directories, or a --board whose spec lists rows")
    board = build(spec, args.run_dirs)
    for message in board.notes:
        print(f"note: {message}", file=sys.stderr)
    text = FORMATS[args.format](board)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    if args.plot:
        from medharness.leaderboards.plots import board_plots

        for path in board_plots(board, args.plot):
            print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from medharness.leaderboards.report import write_report

    path = write_report(args.run_dir, args.output, ablated=args.ablated, max_samples=args.max_samples)
    print(f"wrote {path}")
    return 0
