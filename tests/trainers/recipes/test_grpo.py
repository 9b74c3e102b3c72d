"""GRPO specifics: Dr.GRPO's advantage against its definition (TRL's own code path, read from the trainer's
logged rewards and advantages), the run seed driving sampling, and the suppressed vision tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from train_rewards import REWARDS  # tests/support; tests/trainers/conftest.py registers its length metric

from medharness.trainers.prepare import prepare
from medharness.trainers.run import TrainRequest, resolve, train

pytestmark = pytest.mark.slow
G = 4


def trained(tmp_path: Path, model: Path, preset: str, *extra: str) -> Any:
    """Build and train one step in-process; return the TRL trainer (its `_logs` hold rewards and
    advantages)."""
    config, layers = resolve(TrainRequest(
        presets=[preset, "tiny_cpu"], task="phantom_presence", prompt="r1", model=str(model),
        overrides=[REWARDS, "trl.max_steps=1", f"trl.num_generations={G}",
                   f"trl.per_device_train_batch_size={G}", *extra]))
    prepared = prepare(config, layers, tmp_path)
    built = prepared.recipe.build(prepared.ctx)
    built.train()
    return prepared, built


def totals(prepared: Any, built: Any) -> torch.Tensor:
    rewards = prepared.ctx.rewards
    per_func = torch.tensor([list(built._logs["rewards"][label]) for label in rewards.labels])  # (funcs, N)
    return (torch.tensor(rewards.weights)[:, None] * per_func).sum(dim=0)


@pytest.mark.parametrize("preset", ["dr_grpo", "grpo"])
def test_advantages_follow_the_definition(tmp_path: Path, tiny_models: dict[str, Path], preset: str) -> None:
    prepared, built = trained(tmp_path, tiny_models["qwen2_vl"], preset)
    assert (built.loss_type, built.scale_rewards) == (("dr_grpo", "none") if preset == "dr_grpo" else
                                                      ("grpo", "group"))
    r = totals(prepared, built).view(-1, G)
    advantages = torch.tensor(list(built._logs["advantages"])).view(-1, G)
    centred = r - r.mean(dim=1, keepdim=True)
    assert centred.abs().sum() > 0, "a group without reward spread tests nothing"
    if preset == "dr_grpo":  # Dr.GRPO: advantage = r - mean(r), no division by the std
        assert torch.allclose(advantages, centred, atol=1e-5)
    else:  # GRPO: (r - mean) / (std + 1e-4)
        assert torch.allclose(advantages, centred / (r.std(dim=1, keepdim=True) + 1e-4), atol=1e-4)


def test_vision_tokens_are_suppressed_in_generation(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    config, layers = resolve(TrainRequest(presets=["grpo", "tiny_cpu"], task="phantom_presence",
                                          model=str(tiny_models["qwen2_5_vl"])))
    prepared = prepare(config, layers, tmp_path)
    tokenizer = prepared.ctx.processor.tokenizer
    suppressed = set(prepared.ctx.trl_args.generation_kwargs["suppress_tokens"])
    for token in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"):
        assert tokenizer.convert_tokens_to_ids(token) in suppressed
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") not in suppressed
    # the task's primary metric (plain prompt: no format)
    assert prepared.ctx.trl_args.reward_weights == [1.0]


def _texts(out: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    return [(r["sample_id"], r["text"]) for r in rows]


def test_seed_drives_sampling(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    def run(name: str, seed: int) -> list[tuple[str, str]]:
        req = TrainRequest(presets=["grpo_lora", "tiny_cpu"], task="phantom_presence", prompt="r1",
                           model=str(tiny_models["qwen2_vl"]), output=tmp_path / name, seed=seed,
                           overrides=[REWARDS, "trl.max_steps=1", f"trl.num_generations={G}",
                                      f"trl.per_device_train_batch_size={G}"])
        return _texts(train(req))

    first, again, other = run("a", 0), run("b", 0), run("c", 1)
    assert len(first) == G and len({text for _, text in first}) > 1  # the G completions of one prompt differ
    assert first == again  # same seed, same data order and samples
    assert first != other  # another seed, other prompts and/or completions


@pytest.mark.parametrize("merge", [True, False])
def test_lora_rollouts_are_generated_merged_and_the_base_stays_exact(tmp_path: Path,
                                                                     tiny_models: dict[str, Path],
                                                                     merge: bool) -> None:
    """Through TRL's own GRPO step: the forwards without gradients (the rollouts; beta 0, so no reference
    pass) see merged adapters, the policy-gradient forwards unmerged ones; the base weights come back."""
    from peft.tuners.lora import LoraLayer

    config, layers = resolve(TrainRequest(
        presets=["grpo_lora", "tiny_cpu"], task="phantom_presence", prompt="r1",
        model=str(tiny_models["qwen2_vl"]),
        overrides=[REWARDS, "trl.max_steps=1", f"trl.num_generations={G}", "trl.beta=0",
                   f"trl.per_device_train_batch_size={G}", f"lora.merge_for_rollouts={str(merge).lower()}"]))
    prepared = prepare(config, layers, tmp_path)
    built = prepared.recipe.build(prepared.ctx)
    lora_layers = [m for m in built.model.modules() if isinstance(m, LoraLayer)]
    seen: list[tuple[bool, bool]] = []
    lora_layers[0].register_forward_pre_hook(lambda m, args: seen.append((torch.is_grad_enabled(), m.merged)))
    before = {n: p.detach().clone() for n, p in built.model.named_parameters() if "base_layer" in n}
    built.train()
    assert {merged for grad, merged in seen if not grad} == {merge}
    assert {merged for grad, merged in seen if grad} == {False}
    after = dict(built.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
