"""bench/gpu/rarl_first_steps.py with `--tiny` on a CPU: the whole script (model and reward models built
offline, a reasoning_vqa folder, the rarl recipe's first steps through `medharness train`) and the figures it
reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "rarl_first_steps.py"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rarl_first_steps_tiny(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("bert_score")
    out = tmp_path / "bench"
    argv = [sys.executable, str(SCRIPT), "--tiny", "--steps", "2", "--completion", "4", "--out", str(out)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "rarl_first_steps.json").read_text())
    rarl = result["rarl"]
    assert result["size"] == "tiny" and rarl["steps"] == 2
    assert rarl["rewards"] == ["rarl_format", "length_reward", "rarl_accuracy", "reasoning_similarity"]
    assert rarl["completions_per_step"] == 16 and rarl["completion_tokens_per_step"] == 16 * 4
    assert (rarl["step_time_s"] > 0
            and rarl["completion_tokens_per_s"] == pytest.approx(64 / rarl["step_time_s"]))
    assert rarl["trainable_tensors"] > 0  # LoRA tensors, none of the vision tower (asserted by the trainer)
    assert "completion tok/s" in done.stdout
    completions = [json.loads(x) for x in (out / "train-rarl" / "completions.jsonl").read_text().splitlines()]
    assert all(len(c["rewards"]) == 4 for c in completions)
