"""A sweep whose trained cells are each killed with SIGKILL after a checkpoint and resumed (`train-then-eval
--resume`) ends as the same sweep never stopped: per-step losses, final weights and the evaluated scores of
both cells (SFT, then GRPO from the SFT cell, full fine-tunes) equal, and the GRPO cell samples the same
completions. Each cell runs the real `medharness train` (tests/support/killed_train.py kills it right after
the checkpoint)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from medharness.cli import main
from medharness.trainers.sweeps import stages as sweep_exec

pytestmark = pytest.mark.slow
SUPPORT = Path(__file__).resolve().parents[2] / "support"
CELLS = ("sft-phantom_presence-kall-s0", "grpo-from-sft-phantom_presence-kall-s0")

SWEEP = """\
name: killed
model: {model}
tasks: [phantom_presence]
recipes:
  - sft
  - recipe: grpo
    from: sft
    overrides:
      - "rewards=[{{metric: yes_no_accuracy, weight: 0.9}}, {{metric: test_text_length, weight: 0.1}}]"
common_presets: [tiny_cpu]
overrides: [trl.save_steps=1]
max_steps: 3
eval: {{limit: 2, batch_size: 2, backend: hf, backend_options: {{device: cpu}}}}
baselines: []
base_row: false
"""


def losses(train_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (train_dir / "logs.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def completions(train_dir: Path) -> list[tuple[int, str, str]]:
    rows = [json.loads(line) for line in (train_dir / "completions.jsonl").read_text().splitlines()]
    return [(r["step"], r["sample_id"], r["text"]) for r in rows]


def scores(run_dir: Path) -> Any:
    return json.loads((run_dir / "run.json").read_text())["tasks"]["phantom_presence"]["summary"]["metrics"]


def test_killed_cells_resume_to_the_uninterrupted_sweep(tmp_path: Path, tiny_models: dict[str, Path],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl")
    import torch
    from safetensors.torch import load_file

    monkeypatch.setattr(sweep_exec, "TRAIN_PROGRAM", [sys.executable, str(SUPPORT / "killed_train.py")])
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    file = tmp_path / "s.yaml"
    file.write_text(SWEEP.format(model=tiny_models["qwen2_vl"]), encoding="utf-8")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(whole)]) == 0

    monkeypatch.setenv("KILL_AFTER_STEP", "2")
    monkeypatch.setenv("KILL_MARKS", str(tmp_path))
    argv = ["train-then-eval", "--sweep", str(file), "--output", str(killed)]
    assert main(argv) == 1  # the SFT cell dies after checkpoint-2 (its GRPO child cannot start)
    assert main([*argv, "--resume"]) == 1  # SFT resumes and finishes; the GRPO cell dies after checkpoint-2
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()

    for cell in CELLS:
        a, b = (root / "cells" / cell / "train" for root in (whole, killed))
        info = json.loads((b / "train.json").read_text())
        assert info["status"] == "finished" and info["steps"] == 3
        assert info["resumed_from"] == str(b / "checkpoint-2") and info["previous"][0]["status"] == "running"
        assert losses(b) == pytest.approx(losses(a), rel=1e-6) and sorted(losses(b)) == [1, 2, 3]
        wa, wb = (load_file(str(d / "final" / "model.safetensors")) for d in (a, b))
        assert wa.keys() == wb.keys()
        assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7) for k in wa), f"{cell}: weights differ"
        assert scores(b.parent / "eval" / "phantom_presence") == scores(a.parent / "eval" /
                                                                        "phantom_presence")
    grpo_dirs = [root / "cells" / CELLS[1] / "train" for root in (killed, whole)]
    assert completions(grpo_dirs[0]) == completions(grpo_dirs[1])  # sampled alike after the resume
    # the GRPO cell trained: its weights left the SFT cell's it started from
    sft, grpo = (load_file(str(killed / "cells" / cell / "train" / "final" / "model.safetensors"))
                 for cell in CELLS)
    assert any(not sft[k].equal(grpo[k]) for k in sft)
