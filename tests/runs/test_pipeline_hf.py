"""Real-component runs: the hf backend with tiny VLMs on real VQA-RAD, image failures, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.runlog import RunDir

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl"])
def test_tiny_model_on_real_vqa_rad(tmp_path: Path, tiny_models: dict[str, Path], vqa_rad_dir: Path,
                                    arch: str) -> None:
    config = RunConfig(model=str(tiny_models[arch]), tasks="vqa_rad", data_dir=str(vqa_rad_dir),
                       max_new_tokens=6, batch_size=16)
    run = Runner(config, output=tmp_path / arch).run()
    rows = run.rows("vqa_rad")
    assert len(rows) == 451 and len({r.sample_id for r in rows}) == 451
    assert Counter(r.sample.meta["answer_type"] for r in rows) == {"CLOSED": 272, "OPEN": 179}
    assert all(r.generation.error is None for r in rows)
    assert all((r.generation.completion_tokens or 0) <= 6 for r in rows)
    assert run.log.model.startswith(f"hf:{tiny_models[arch]}@")
    assert run.log.attn_implementation == "sdpa"  # the kernel the model ran with
    assert run.log.trained_from is not None and not run.log.trained_from.known  # a folder without a manifest
    summary = run.log.tasks["vqa_rad"].summary.model_dump()
    assert summary["n"] == 451 and summary["groups"]["answer_type"]["OPEN"]["n"] == 179
    # random weights answer nonsense: every unparsed/wrong answer is counted, none guessed right
    unparsed = sum(not r.answer.parsed for r in rows)
    assert summary["metrics"]["vqa_accuracy"]["n_unparsed"] == unparsed


def test_image_failures_are_recorded_per_sample(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (60, 40), (10, 200, 10)).save(data / "images" / "ok.png")
    (data / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    names = ["ok.png", "missing.png", "corrupt.jpg", "../../outside.png"]
    (data / "test.jsonl").write_text("".join(
        json.dumps({"qid": i, "question": "green?", "answer": "yes", "img": n}) + "\n"
        for i, n in enumerate(names)))
    task = tmp_path / "toy.yaml"
    task.write_text("""\
name: toy
version: "1"
description: toy
card: {licence: x, citation: y}
sources: [{kind: local, path: "{split}.jsonl", image_dir: images}]
columns: {id: qid, image: img}
prompts: {default: p, variants: {p: {user: "{question}"}}}
""")
    config = RunConfig(model=str(tiny_models["qwen2_vl"]), tasks=str(task), data_dir=str(data),
                       max_new_tokens=4, max_error_rate=1.0)
    run = Runner(config, output=tmp_path / "run").run()
    errors = {r.sample_id: r.generation.error for r in run.rows("toy")}
    assert errors["0"] is None
    assert "missing image 'images/missing.png'" in errors["1"]
    assert "corrupt image 'images/corrupt.jpg'" in errors["2"]
    assert "resolves outside the data root" in errors["3"]
    summary = run.log.tasks["toy"].summary.model_dump()
    assert summary["n"] == 4 and summary["n_errors"] == 3


def _run_cmd(model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medharness.cli", "run", "--model", str(model), "--tasks",
            "phantom_presence", "--batch-size", "2", "--max-new-tokens", "8", "--limit", "60", "--output",
            str(out), "--no-progress", "--no-cache", *extra]


def test_kill_9_and_resume_loses_and_repeats_nothing(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    model = tiny_models["qwen2_vl"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference"
    subprocess.run(_run_cmd(model, reference), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_run_cmd(model, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    samples = killed / "samples" / "phantom_presence.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_text().count("\n") >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = samples.read_text().count("\n")
    assert 10 <= before < 60
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    with samples.open("a") as fh:  # a kill in the middle of a write leaves a torn line
        fh.write('{"task": "phantom_presence", "task_version": "1.0", "sam')
    subprocess.run(_run_cmd(model, killed, "--resume"), check=True, env=env, capture_output=True)
    resumed = RunDir.open(killed)
    assert resumed.log.status == "finished"
    rows = resumed.rows("phantom_presence")
    ids = [r.sample_id for r in rows]
    assert len(ids) == 60 and len(set(ids)) == 60
    ref_rows = {r.sample_id: r for r in RunDir.open(reference).rows("phantom_presence")}
    assert set(ids) == set(ref_rows)
    # greedy decoding: the resumed run's answers are exactly the uninterrupted run's
    assert all(r.generation.text == ref_rows[r.sample_id].generation.text for r in rows)
    assert resumed.log.tasks["phantom_presence"].summary.model_dump() == \
        RunDir.open(reference).log.tasks["phantom_presence"].summary.model_dump()
