"""`medharness train` on the command line: progress lines without a terminal, and bad input refused before
anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medharness.cli import main

pytest.importorskip("trl", reason="training needs the `train` extra")  # without it: tested below, by name


def _train(*args: str) -> int:
    return main(["train", "--task", "phantom_presence", *args])


@pytest.mark.slow
def test_train_cli_prints_progress_and_finishes(tmp_path: Path, tiny_models: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = _train("--preset", "grpo_lora", "--preset", "tiny_cpu", "--model", str(tiny_models["qwen2_vl"]),
                  "--output", str(out), "--max-steps", "1", "-C", "trl.save_steps=1")
    assert code == 0
    printed = capsys.readouterr().out
    assert "step 1/1" in printed and "reward" in printed and f"finished: {out / 'final'}" in printed
    assert json.loads((out / "train.json").read_text())["status"] == "finished"


@pytest.mark.parametrize(("args", "message"), [
    (["--recipe", "gpro", "--model", "m"], "unknown trainer 'gpro'. Did you mean 'grpo'"),
    (["--preset", "dr_gpro", "--model", "m"], "unknown preset 'dr_gpro'. Did you mean 'dr_grpo'"),
    (["--recipe", "grpo", "--model", "m", "-C", "rewards=[{metric: iou}]"],
     "reward metric\\(s\\) iou do not apply to task phantom_presence"),
    (["--recipe", "grpo", "--model", "m", "-C", "rewards=[{metric: yes_no_acuracy}]"],
     "Did you mean 'yes_no_accuracy'"),
    (["--recipe", "grpo", "--model", "m", "-C", "trl.num_generation=2"], "unknown TRL setting"),
    (["--recipe", "sft", "--model", "m", "--prompt", "r2"], "unknown prompt 'r2'"),
    (["--recipe", "sft", "--model", "m", "--samples", "/nonexistent/ids.json"],
     "samples file .* does not exist"),
    (["--recipe", "sft"], "train needs --model"),
])
def test_bad_input_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              args: list[str], message: str) -> None:
    out = tmp_path / "out"
    assert _train(*args, "--output", str(out)) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert not out.exists()


def test_missing_train_extra_is_named(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "trl" else real(name, *a))
    assert _train("--model", "x") == 2
    assert "training needs trl: pip install 'medharness[hf,train]'" in capsys.readouterr().err
