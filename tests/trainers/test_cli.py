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
    assert "step 1/1" in printed and "reward" in printed
    assert f"finished: {out / 'final'} (train.json, logs.jsonl, completions.jsonl in {out})" in printed
    assert json.loads((out / "train.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_relative_model_is_recorded_absolute_and_the_output_named_as_written(
        tmp_path: Path, tiny_models: dict[str, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An SFT-LoRA run from a relative --model: the adapter and the manifest name the base by its absolute
    path (so the adapter evaluates from any folder); the last line names the files the run wrote (SFT samples
    no completions)."""
    base = tiny_models["qwen2_vl"]
    monkeypatch.chdir(base.parent)
    out = tmp_path / "out"
    assert _train("--preset", "sft_lora", "--preset", "tiny_cpu", "--model", base.name, "--output", str(out),
                  "--max-steps", "1") == 0
    final = out / "final"
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    assert json.loads((final / "medharness.json").read_text())["base_model"] == str(base)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"finished: {final} (train.json, logs.jsonl in {out})"
    monkeypatch.chdir(tmp_path)  # elsewhere, the adapter still finds its base
    assert main(["run", "--model", str(final), "--tasks", "phantom_presence", "--limit", "2",
                 "--output", str(tmp_path / "eval")]) == 0


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
    (["--recipe", "sft", "--model", "m", "--data-dir", "/nonexistent/data"],  # the task reads its data there
     "data dir /nonexistent/data does not exist"),
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


def test_train_help_lists_every_shipped_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from medharness.trainers import PRESETS_DIR

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    assert {"rarl", "grpo_study_paper", "tiny_cpu"} <= set(names)
    assert " ".join(names) in shown and "--data-dir" in shown


DRY_RUN_CASES = [case for case in test_bad_input_is_refused_before_training.pytestmark[0].args[1]
                 if "iou" not in case[0][-1]]  # a reward's fit to the gold answers: checked as the run starts


@pytest.mark.parametrize(("args", "message"), DRY_RUN_CASES)
def test_a_dry_run_refuses_what_a_run_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              args: list[str], message: str) -> None:
    out = tmp_path / "out"
    assert _train(*args, "--output", str(out), "--dry-run", "--json") == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert not out.exists()


def test_dry_run_prints_the_resolved_config_without_a_model(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """No model named 'no-such/model' exists: the dry run never loads one, nor creates the output; it prints
    every TRL setting as TRL's config object resolves it, the rewards and weights, the data and the prompt."""
    from medharness.trainers.recipes.base import recipe_class

    out = tmp_path / "out"
    assert _train("--recipe", "grpo", "--model", "no-such/model", "--output", str(out), "--dry-run", "--json",
                  "-C", "trl.learning_rate=3e-6", "-C", "samples.limit=5") == 0
    info = json.loads(capsys.readouterr().out)
    assert not out.exists() and info["output"] == str(out) and info["output_exists"] is False
    defaults = recipe_class("grpo").config_class()(output_dir=str(out), use_cpu=True).to_dict()
    assert set(info["trl"]) == set(defaults)
    assert info["trl"]["learning_rate"] == 3e-6
    assert info["set_at"]["trl.learning_rate"] == "-C trl.learning_rate=3e-6"
    assert info["trl"]["adam_beta1"] == defaults["adam_beta1"]  # a TRL default, not set by the config
    assert [(r["label"], r["weight"]) for r in info["rewards"]] == [("yes_no_accuracy", 1.0)]
    assert info["trl"]["reward_weights"] == [1.0]
    assert info["data"] == {"split": "train", "count": 5}
    assert info["prompts"][info["prompt"]]["user"]
    assert _train("--recipe", "grpo", "--model", "no-such/model", "--output", str(out), "--dry-run") == 0
    text = capsys.readouterr().out
    assert "learning_rate = 1e-06" in text.split("TRL's defaults")[0]  # the grpo preset's, with its file:line
    assert "grpo.yaml:" in text and "yes_no_accuracy" in text and "(not created)" in text
    assert not out.exists()


def test_json_needs_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert _train("--recipe", "grpo", "--model", "m", "--json") == 2
    assert "--json prints the --dry-run config" in capsys.readouterr().err


def test_dry_run_without_trl_prints_the_settings_as_given(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A light install (no trl): the dry run still resolves presets, rewards and data; `trl` holds the
    settings as the config gives them, and a note says TRL's checks and defaults are missing."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "trl" else real(name, *a))
    assert _train("--recipe", "grpo", "--model", "m", "--dry-run", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["trl"]["learning_rate"] == 1e-6 and "adam_beta1" not in info["trl"]
    assert any("trl is not installed" in note for note in info["notes"])
