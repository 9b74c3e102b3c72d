"""Every recipe trains a few steps on tiny Qwen2-VL / Qwen2.5-VL models and writes the output contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medharness.cli import main
from medharness.runs.folders import TrainDir
from medharness.trainers.run import TrainRequest, train

pytestmark = pytest.mark.slow
pytest.importorskip("trl")

from train_rewards import LABELS, REWARDS

PRESETS = ["sft", "sft_lora", "dpo", "dpo_lora", "grpo", "grpo_lora", "dr_grpo"]
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def run_training(out: Path, model: Path, preset: str, *extra: str, **kw: Any) -> Path:
    overrides = [REWARDS, *extra] if preset.startswith(("grpo", "dr_grpo")) else list(extra)
    req = TrainRequest(presets=[preset, "tiny_cpu"], task="phantom_presence", prompt="r1", model=str(model),
                       output=out, overrides=overrides, **kw)
    return train(req, progress=print)


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def is_vision(name: str) -> bool:
    return "visual" in name.split(".")


def check_full(base: Path, final: Path) -> None:
    before, after = weights(base), weights(final)
    assert before.keys() == after.keys()
    changed = {k for k in before if not before[k].equal(after[k])}
    assert changed, "no weight changed"
    assert not {k for k in changed if is_vision(k)}, "the frozen vision tower changed"


def check_lora(base: Path, final: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    adapter = load_file(str(final / "adapter_model.safetensors"))
    assert adapter and not any(is_vision(k) for k in adapter)
    assert all(any(t in k for t in LORA_TARGETS) for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k), "LoRA weights did not move"
    before = AutoModelForImageTextToText.from_pretrained(base).state_dict()
    model = AutoModelForImageTextToText.from_pretrained(base)
    merged = PeftModel.from_pretrained(model, final).merge_and_unload().state_dict()
    assert before.keys() == merged.keys()
    changed = {k for k in before if not before[k].equal(merged[k])}
    assert changed and all(any(t in k for t in LORA_TARGETS) and not is_vision(k) for k in changed), changed


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("preset", PRESETS)
def test_recipe_trains_and_writes_the_output_contract(tmp_path: Path, tiny_models: dict[str, Path], arch: str,
                                                      preset: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    base = tiny_models[arch]
    out = run_training(tmp_path / "out", base, preset)
    info = json.loads((out / "train.json").read_text())
    assert info["status"] == "finished" and info["final"] == str(out / "final") and info["steps"] == 2
    assert info["config"]["trl"]["max_steps"] == 2 and info["presets"] == [preset, "tiny_cpu"]
    log = TrainDir(out).log()  # the typed record reads what the run wrote, field for field
    assert log is not None and log.model_dump(mode="json", exclude_unset=True) == info
    assert log.steps == 2 and log.previous == [] and "previous" not in info
    lora = preset.endswith("_lora")
    assert not (out / "checkpoint-1").exists()  # tiny_cpu saves at the end only
    for folder in (out / "checkpoint-2", out / "final"):
        manifest = json.loads((folder / "medharness.json").read_text())
        assert manifest["adapter"] is lora and manifest["recipe"] == info["recipe"]
        assert manifest["attn_implementation"] == "sdpa" and manifest["base_model"] == str(base)
        assert manifest["versions"]["trl"].startswith("1.16") and manifest["n_train_samples"] == 8
        assert (folder / "processor_config.json").exists()
        assert ((folder / "adapter_config.json").exists() if lora
                else (folder / "model.safetensors").exists())
    assert manifest["step"] == 2 and manifest["config"]["trl"]["learning_rate"] == 1e-3
    card = (out / "final" / "README.md").read_text()  # medharness's model card, not TRL's draft
    assert card == (out / "README.md").read_text() and "None" not in card
    assert (f"the local model `{base}`" in card
            and f"medharness run --model {(out / 'final').resolve()} --tasks phantom_presence" in card)

    logs = jsonl(out / "logs.jsonl")
    steps = [r for r in logs if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["step_time"] > 0 and r["tokens_per_s"] > 0 for r in steps)
    typed = [r for r in TrainDir(out).log_rows() if r.metric("loss") is not None]  # typed rows: the same
    assert [(r.step, r.step_time, r.metric("loss")) for r in typed] == [
        (r["step"], r["step_time"], r["loss"]) for r in steps]
    assert "step 2/2" in capsys.readouterr().out
    if info["recipe"] == "grpo":
        for row in steps:
            assert set(row["reward_components"]) == LABELS
            for key in ("reward", "reward_std", "kl", "frac_reward_zero_std", "clip_ratio/region_mean",
                        "completions/mean_length"):
                assert key in row, key
        completions = jsonl(out / "completions.jsonl")
        assert {r["step"] for r in completions} == {1, 2}
        assert all(set(r["rewards"]) == LABELS and "answer" in r and r["sample_id"] for r in completions)
        assert [c.model_dump() for c in TrainDir(out).completion_rows()] == completions
        assert info["rewards"][0] == {"label": "yes_no_accuracy", "metric": "yes_no_accuracy", "args": {},
                                      "weight": 0.9, "gold_mean": 1.0}
        assert info["batch"]["num_generations"] == 2 and info["batch"]["prompts_per_step"] == 1

    if lora:
        check_lora(base, out / "final")
        return
    check_full(base, out / "final")
    if preset in ("sft", "grpo"):  # the full fine-tune evaluates with `run`, lineage attached
        code = main(["run", "--model", str(out / "final"), "--tasks", "phantom_presence", "--limit", "4",
                     "--output", str(tmp_path / "eval")])
        assert code == 0
        run_info = json.loads((tmp_path / "eval" / "run.json").read_text())
        assert run_info["status"] == "finished"


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    out = run_training(tmp_path / "out", tiny_models["qwen2_vl"], "grpo_lora")
    with (out / "logs.jsonl").open("a") as fh:  # a step logged after the last checkpoint, then a kill
        fh.write(json.dumps({"step": 3, "loss": 0.0}) + "\n" + '{"step": 4, "lo')
    # how rollouts are generated may change on resume, like TRL settings
    again = run_training(tmp_path / "out", tiny_models["qwen2_vl"], "grpo_lora",
                         "lora.merge_for_rollouts=false", max_steps=4, resume=True)
    assert json.loads((again / "train.json").read_text())["config"]["lora"]["merge_for_rollouts"] is False
    info = json.loads((again / "train.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 4
    assert info["resumed_from"].endswith("checkpoint-2") and info["previous"][0]["status"] == "finished"
    assert [r["step"] for r in jsonl(out / "logs.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert sorted({r["step"] for r in jsonl(out / "completions.jsonl")}) == [1, 2, 3, 4]
    assert json.loads((out / "final" / "medharness.json").read_text())["step"] == 4
    assert (out / "checkpoint-4").is_dir()
    with pytest.raises(Exception, match="exists and is not empty"):
        run_training(tmp_path / "out", tiny_models["qwen2_vl"], "grpo_lora")
    with pytest.raises(Exception, match="different seed"):
        run_training(tmp_path / "out", tiny_models["qwen2_vl"], "grpo_lora", seed=5, resume=True)


@pytest.mark.parametrize(("error", "status"), [(KeyboardInterrupt, "interrupted"), (RuntimeError, "failed")])
def test_a_stopped_run_records_its_status(tmp_path: Path, tiny_models: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch, error: type, status: str) -> None:
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            raise error("stop")

    from medharness.trainers import prepare as prepare_module

    original = prepare_module.Prepared.add_callbacks

    def add_callbacks(self: Any, output: Path, progress: Any) -> None:
        original(self, output, progress)
        self.ctx.callbacks.append(Stop())

    monkeypatch.setattr(prepare_module.Prepared, "add_callbacks", add_callbacks)
    with pytest.raises(error):
        run_training(tmp_path / "out", tiny_models["qwen2_vl"], "sft_lora")
    info = json.loads((tmp_path / "out" / "train.json").read_text())
    assert info["status"] == status and info["final"] is None and info["finished"]
    assert (info["error"] is None) == (status == "interrupted")


def test_a_second_stage_records_its_parent(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """Training from a medharness checkpoint (multi-stage recipes): the manifest names the parent."""
    from medharness.checkpoints.lineage import file_hash

    first = run_training(tmp_path / "stage1", tiny_models["qwen2_vl"], "grpo", max_steps=1) / "final"
    second = run_training(tmp_path / "stage2", first, "sft_lora", max_steps=1) / "final"
    manifest = json.loads((second / "medharness.json").read_text())
    assert manifest["parent"] == file_hash(first / "medharness.json")
    assert manifest["parent_path"] == str(first.resolve()) and manifest["base_model"] == str(first)
    assert (manifest["base_fingerprint"]
            and json.loads((first / "medharness.json").read_text())["parent"] is None)


def test_a_second_writer_of_a_training_output_is_refused(tmp_path: Path,
                                                         tiny_models: dict[str, Path]) -> None:
    """Two `train` on one --output used to both run to exit 0 and interleave logs.jsonl: the output is
    locked as run directories are, and the second is refused before it writes anything there."""
    from medharness.core.errors import RunInUseError
    from medharness.runs.runlog import LOCK_FILE, RunLock

    out = tmp_path / "out"
    out.mkdir()
    held = RunLock.acquire(out, "train")  # another training process holds it
    try:
        with pytest.raises(RunInUseError, match="in use by another medharness process"):
            run_training(out, tiny_models["qwen2_vl"], "sft")
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    finally:
        held.release()
    out = run_training(out, tiny_models["qwen2_vl"], "sft")  # free again: it trains, and lets go
    assert json.loads((out / "train.json").read_text())["status"] == "finished"
    RunLock.acquire(out, "check").release()
