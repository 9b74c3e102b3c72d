"""`train --resume` continues exactly: a run killed with SIGKILL after a checkpoint and resumed logs the same
per-step losses and ends on the same weights as the run never stopped (full fine-tune, LoRA); the
checkpoint is loaded whole under the model's own names or refused; a checkpoint at max_steps trains no step
past it; a checkpoint torn by the kill is passed over."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from medharness.core.errors import ConfigError, DataError
from medharness.trainers.resume import Checkpoint, is_done, last_checkpoint, target_step

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def checkpoint_folder(output: Path, step: int, complete: bool = True, max_steps: int = 4) -> Path:
    folder = output / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps(
        {"global_step": step, "max_steps": max_steps, "num_train_epochs": 1}))
    if complete:
        (folder / "medharness.json").write_text("{}")
    return folder


def test_the_last_complete_checkpoint_is_resumed_and_a_torn_one_passed_over(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    checkpoint_folder(tmp_path, 2)
    ten = checkpoint_folder(tmp_path, 10)
    checkpoint_folder(tmp_path, 12, complete=False)  # killed while TRL saved it: no manifest yet
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == Checkpoint(ten, 10)


def test_a_checkpoint_at_max_steps_is_done_and_one_past_it_refused(tmp_path: Path) -> None:
    ckpt = Checkpoint(checkpoint_folder(tmp_path, 4, max_steps=4), 4)
    steps = SimpleNamespace(max_steps=4, num_train_epochs=1)
    assert is_done(steps, ckpt) and not is_done(SimpleNamespace(max_steps=6, num_train_epochs=1), ckpt)
    with pytest.raises(ConfigError, match=r"checkpoint-4 is at step 4, past max_steps 3: give --max-steps 4"):
        is_done(SimpleNamespace(max_steps=3, num_train_epochs=1), ckpt)
    # counted in epochs (max_steps -1): the total the checkpoint's schedule recorded, unless epochs changed
    assert target_step(SimpleNamespace(max_steps=-1, num_train_epochs=1), ckpt) == 4
    assert target_step(SimpleNamespace(max_steps=-1, num_train_epochs=2), ckpt) is None


def test_a_full_checkpoint_loads_whole_under_the_models_own_names(tmp_path: Path,
                                                                  tiny_models: dict[str, Path]) -> None:
    """The tensors saved as `visual.*` / `model.layers.*` are copied into `model.visual.*` /
    `model.language_model.*` of a model on the starting weights; a checkpoint short of a tensor is refused."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from safetensors.torch import load_file, save_file

    from medharness.core.torchvision_shim import ensure_torchvision_importable
    from medharness.trainers.resume import load_full_checkpoint

    ensure_torchvision_importable()
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen2_vl"])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path / "checkpoint-3"
    model.save_pretrained(folder)  # what Trainer writes into a checkpoint
    saved = load_file(str(folder / "model.safetensors"))
    assert any(k.startswith("visual.") for k in saved)
    assert not any(k.startswith("model.visual.") for k in saved)

    model.load_state_dict(start)  # back to the starting weights, as a resumed run builds its trainer
    load_full_checkpoint(model, folder)
    state = model.state_dict()
    assert state.keys() == trained.keys() and all(torch.equal(state[k], trained[k]) for k in trained)

    name = "visual.blocks.0.attn.qkv.weight"
    save_file({("renamed." + k if k == name else k): v for k, v in saved.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(DataError, match=r"checkpoint-3 does not load every tensor of the model: 1 left "
                                        r"at their starting values \(e\.g\. model\.visual\.blocks\.0\."):
        load_full_checkpoint(model, folder)


def test_a_lora_checkpoint_must_hold_exactly_the_adapters_tensors(tmp_path: Path,
                                                                   tiny_models: dict[str, Path]) -> None:
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    from medharness.core.torchvision_shim import ensure_torchvision_importable
    from medharness.trainers.resume import check_adapter_checkpoint

    ensure_torchvision_importable()
    from transformers import AutoModelForImageTextToText

    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(tiny_models["qwen2_vl"]),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path / "checkpoint-2"
    model.save_pretrained(folder)  # what Trainer writes into a LoRA checkpoint
    check_adapter_checkpoint(model, folder)
    saved = load_file(str(folder / "adapter_model.safetensors"))
    dropped = min(saved)
    save_file({k: v for k, v in saved.items() if k != dropped}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(DataError, match=rf"checkpoint-2 does not load every tensor of the model: 1 left at "
                                        rf"their starting values \(e\.g\. {re.escape(dropped)}\)"):
        check_adapter_checkpoint(model, folder)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(DataError, match="has no adapter_model.safetensors"):
        check_adapter_checkpoint(model, folder)


# -- runs killed with SIGKILL, then resumed ---------------------------------------------------------------

RUNS = {  # preset, extra settings (GRPO, full: the sweep's second cell, sweeps/test_resume_cells.py)
    "sft": ("sft", []),
    "sft_lora": ("sft_lora", ["-C", "trl.gradient_accumulation_steps=2",
                              "-C", "trl.per_device_train_batch_size=1"]),
}


def train_process(out: Path, model: Path, preset: str, max_steps: int, extra: list[str], *,
                  resume: bool = False, kill_after: int | None = None) -> subprocess.CompletedProcess[str]:
    """`medharness train` in its own process (tests/support/killed_train.py), SIGKILLed after checkpoint
    `kill_after`."""
    env = {k: v for k, v in os.environ.items() if k != "KILL_AFTER_STEP"}
    if kill_after is not None:
        env.update(KILL_AFTER_STEP=str(kill_after), KILL_MARKS=str(out.parent))
    argv = [sys.executable, str(SUPPORT / "killed_train.py"), "--preset", preset, "--preset", "tiny_cpu",
            "--task", "phantom_presence", "--prompt", "r1", "--model", str(model),
            "--max-steps", str(max_steps), "--output", str(out), "-C", "trl.save_steps=1", *extra,
            *(["--resume"] if resume else [])]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), f"a step logged twice: {steps}"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def final_weights(out: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    final = out / "final"
    adapter = final / "adapter_model.safetensors"
    return load_file(str(adapter if adapter.exists() else final / "model.safetensors"))


def assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    import torch

    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a), "final weights differ"


def assert_same_run(killed: Path, whole: Path) -> None:
    assert losses(killed) == pytest.approx(losses(whole), rel=1e-6)
    assert_same_weights(final_weights(killed), final_weights(whole))


@pytest.mark.slow
@pytest.mark.parametrize("run", sorted(RUNS))
def test_a_run_killed_after_a_checkpoint_resumes_as_if_never_stopped(tmp_path: Path, run: str,
                                                                      tiny_models: dict[str, Path]) -> None:
    pytest.importorskip("trl")
    preset, extra = RUNS[run]
    model = tiny_models["qwen2_vl"]
    whole = tmp_path / "whole"
    done = train_process(whole, model, preset, 4, extra)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    died = train_process(killed, model, preset, 4, extra, kill_after=2)
    assert died.returncode == -9, died.stderr[-3000:]
    info = json.loads((killed / "train.json").read_text())
    assert info["status"] == "running" and not (killed / "final").exists()
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    again = train_process(killed, model, preset, 4, extra, resume=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "missing keys" not in again.stderr and "unexpected keys" not in again.stderr
    info = json.loads((killed / "train.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 4
    assert info["resumed_from"] == str(killed / "checkpoint-2") and info["previous"][0]["status"] == "running"
    assert sorted(losses(killed)) == [1, 2, 3, 4]
    assert_same_run(killed, whole)
    if run == "sft":  # the full fine-tune moved every trained tensor away from the checkpoint it resumed
        from safetensors.torch import load_file

        resumed_from = load_file(str(killed / "checkpoint-2" / "model.safetensors"))
        final = final_weights(killed)
        assert any(not final[k].equal(resumed_from[k]) for k in final)


@pytest.mark.slow
def test_a_checkpoint_at_max_steps_trains_no_further(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """Killed between the last checkpoint and final/ (max_steps inside an epoch: Trainer alone would run one
    step more): --resume writes final/ from that checkpoint; on a finished run it changes nothing."""
    pytest.importorskip("trl")
    model = tiny_models["qwen2_vl"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert train_process(whole, model, "sft", 2, []).returncode == 0  # 8 samples, 2 a step: 4 steps an epoch
    assert train_process(killed, model, "sft", 2, [], kill_after=2).returncode == -9
    assert not (killed / "final").exists()

    again = train_process(killed, model, "sft", 2, [], resume=True)
    assert again.returncode == 0, again.stderr[-3000:]
    info = json.loads((killed / "train.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 2 and not (killed / "checkpoint-3").exists()
    assert json.loads((killed / "final" / "medharness.json").read_text())["step"] == 2
    in_final = {p.name for p in (killed / "final").iterdir()}
    assert not {"optimizer.pt", "trainer_state.json", "rng_state.pth"} & in_final
    assert_same_run(killed, whole)

    stamps = {p.name: p.stat().st_mtime_ns for p in (whole / "final").iterdir()}
    assert train_process(whole, model, "sft", 2, [], resume=True).returncode == 0  # finished already
    assert {p.name: p.stat().st_mtime_ns for p in (whole / "final").iterdir()} == stamps
    assert json.loads((whole / "train.json").read_text())["steps"] == 2 and sorted(losses(whole)) == [1, 2]
    refused = train_process(whole, model, "sft", 1, [], resume=True)
    assert refused.returncode == 2 and "past max_steps 1" in refused.stderr
