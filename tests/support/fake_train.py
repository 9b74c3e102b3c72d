"""A stand-in for `medharness train` in the sweep's fault-injection tests (skip / resume / merge logic only;
the real end-to-end sweep test runs the real `train`). It honours the train command's output contract:
OUTPUT/train.json (status, final), OUTPUT/checkpoint-<step>/, OUTPUT/final/ (a copy of --model, with a
medharness.json manifest), and appends its argv to OUTPUT/calls.jsonl.

FAKE_TRAIN_CRASH=SUBSTRING: a run whose --output contains SUBSTRING writes checkpoint-1 and train.json
(status running) and dies (exit 137) once, as if killed; FAKE_TRAIN_CRASH_MARK names the file that
remembers it already crashed. Starting again over an existing train.json without --resume exits 3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from medharness.checkpoints.lineage import CheckpointManifest, manifest_path


def main() -> int:
    p = argparse.ArgumentParser()
    for flag in ("--recipe", "--task", "--model", "--seed", "--samples", "--max-steps",
                 "--config", "--prompt"):
        p.add_argument(flag)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--preset", action="append", default=[])
    p.add_argument("-C", dest="overrides", action="append", default=[])
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    out: Path = args.output
    info = out / "train.json"
    if info.is_file() and not args.resume:
        print("train.json exists: pass --resume", file=sys.stderr)
        return 3
    out.mkdir(parents=True, exist_ok=True)
    with (out / "calls.jsonl").open("a") as fh:
        fh.write(json.dumps(sys.argv[1:]) + "\n")

    def checkpoint(name: str) -> Path:
        folder = out / name
        if not folder.exists():
            shutil.copytree(args.model, folder, ignore=shutil.ignore_patterns("medharness.json"))
        record = CheckpointManifest(base_model=args.model, recipe=args.recipe, task=args.task,
                                    preset="+".join(args.preset) or None,
                                    config={"overrides": args.overrides}, train_samples_hash="0" * 64,
                                    n_train_samples=1, seed=int(args.seed or 0), step=1)
        manifest_path(folder).write_text(record.model_dump_json(indent=2))
        return folder

    info.write_text(json.dumps({"status": "running", "final": None}))
    checkpoint("checkpoint-1")
    crash, mark = os.environ.get("FAKE_TRAIN_CRASH"), os.environ.get("FAKE_TRAIN_CRASH_MARK")
    if crash and crash in str(out) and mark and not Path(mark).exists():
        Path(mark).write_text("crashed")
        os._exit(137)
    final = checkpoint("final")
    info.write_text(json.dumps({"status": "finished", "final": str(final.resolve())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
