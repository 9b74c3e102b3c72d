"""The README's agreement example, reproducible offline: a real VQA-RAD run judged by three SCRIPTED judges.

No LLM is reachable from the machines this project is built on, so the judges here are rules played by the
test suite's fake OpenAI server on 127.0.0.1 (tests/support/fake_api_server.py), answering in rarl_v1's
format:

    exact     prediction_score 1 iff the answer equals the gold (case and final period ignored)
    overlap   1 iff the answer and the gold share a word (a lenient judge)
    flaky     `exact`, but about one reply in six is prose with no JSON (an unscored verdict)

The answers judged are a "shuffled gold" floor on the real VQA-RAD test split: each sample gets the gold
answer of another sample of the same answer type (seeded), replayed from a predictions file. Everything else
is the real path: `medharness run` (replay), `medharness judge` through the openai backend, `medharness
agreement`. Usage:
    python scripts/judge_demo.py [--data-dir ../shared/data/vqa-rad-test] [--out runs/judge-demo]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from fake_api_server import FakeAPIServer

from medharness.cli import main


def _tag(text: str, name: str) -> str:
    match = re.search(rf"<{name}>\n(.*?)\n</{name}>", text, re.DOTALL)
    return match.group(1).strip().lower().rstrip(".") if match else ""


def judge(text: str, model: str) -> str:
    gold, answer = _tag(text, "gold_answer"), _tag(text, "prediction")
    if model == "overlap":
        score = int(bool(set(gold.split()) & set(answer.split())))
    else:
        score = int(gold == answer)
        if model == "flaky" and zlib.crc32(text.encode()) % 6 == 0:
            return "The answer looks right to me."
    return json.dumps({"evaluation": f"{model} rule", "reasoning_score": score, "prediction_score": score})


def shuffled_gold(data_dir: Path, path: Path, seed: int = 0) -> Path:
    from medharness.taskfiles.task import load_task

    samples = load_task("vqa_rad", {"data_dir": str(data_dir)}).load_samples()
    rng = random.Random(seed)
    by_type: dict[str, list[str]] = {}
    for s in samples:
        by_type.setdefault(str(s.meta.get("answer_type")), []).append(str(s.target))
    with path.open("w") as fh:
        for s in samples:
            fh.write(json.dumps({"id": s.id,
                                 "prediction": rng.choice(by_type[str(s.meta.get("answer_type"))])}) + "\n")
    return path


def run(data_dir: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    preds = shuffled_gold(data_dir, out.parent / f"{out.name}-predictions.jsonl")
    assert main(["run", "--model", str(preds), "--tasks", "vqa_rad", "--data-dir", str(data_dir),
                 "--output", str(out), "--no-cache", "--no-progress"]) == 0
    with FakeAPIServer(max_requests=5000, max_seconds=600, answer_by_model=judge) as server:
        panel = out.parent / f"{out.name}-panel.yaml"
        panel.write_text("".join(f"- {{name: {m}, spec: rarl_v1, backend: openai, model: {m}, "
                                 f"base_url: '{server.url}/v1', options: {{concurrency: 16}}}}\n"
                                 for m in ("exact", "overlap", "flaky")))
        assert main(["judge", str(out), "--judge-config", str(panel), "--no-cache", "--no-progress"]) == 0
    assert main(["agreement", str(out), "--output", str(out / "agreement.md")]) == 0
    print((out / "agreement.md").read_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "vqa-rad-test")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "judge-demo")
    args = parser.parse_args()
    run(args.data_dir, args.out)
