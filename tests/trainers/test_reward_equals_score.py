"""Reward == score: every recipe's reward component is named by the metric that computes it, and on every
shipped task variant the recipe trains, the run records a metric of that name with the same arguments; through
the commands themselves, `medharness reward` prints for each component exactly what `run` records for the
same text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.core.yamlio import read_mapping
from medharness.taskfiles.task import Task, discover_tasks, load_task, recipe_for
from medharness.trainers.recipes.rarl import RarlOptions, rarl_rewards
from medharness.trainers.recipes.vrft_aug import VrftOptions, vrft_rewards
from medharness.trainers.rewards import component_label, default_rewards, parse_rewards
from medharness.trainers.schema import RewardSpec

PRESETS = Path(__file__).resolve().parents[2] / "trainers" / "presets"
# RARL's components that need a model (the trained model's tokenizer, BERTScore, a cross-encoder): `run` does
# not record them; they are named by their metric and never borrow a column the run records.
MODEL_REWARDS = {"length_reward", "rarl_accuracy", "reasoning_similarity"}


def _study(task: Task, prompt: str) -> list[RewardSpec]:
    """The GRPO study preset's list, on the variants it is for: `<answer>` variants scored by choice."""
    variant = task.config.prompts.variants[prompt]
    names = {m.metric.name for m in recipe_for(task, prompt=prompt).metrics}
    if "answer_tag" not in str(variant.parser) or "choice_accuracy" not in names:
        raise ConfigError("not a study variant")
    return parse_rewards(read_mapping(PRESETS / "grpo_study_paper.yaml", "preset")[0]["rewards"])


LISTS: dict[str, Callable[[Task, str], list[RewardSpec]]] = {
    "grpo": default_rewards,
    "grpo_study_paper": _study,
    "vrft_aug": lambda t, p: vrft_rewards(t, p, VrftOptions()),
    "vrft_aug reward=accuracy": lambda t, p: vrft_rewards(t, p, VrftOptions(reward="accuracy")),
    "rarl": lambda t, p: rarl_rewards(RarlOptions()),
}


def _variants() -> list[tuple[str, str]]:
    return [(name, v) for name in sorted(discover_tasks()) for v in load_task(name).config.prompts.variants]


def test_every_component_is_a_column_the_run_records() -> None:
    """For every recipe's reward list on every shipped task variant it builds on (the study list on its choice
    variants, RARL on the variants that ask for its format), each component's name is a metric the variant
    records with the same metric and arguments, so the two cannot differ. A metric the variant records under
    another name is given that name (VRFT-Aug's IoU > 0.5 is `iou_gt_50`, its strict format
    `format_strict`)."""
    checked, missing = 0, []
    for name, prompt in _variants():
        task = load_task(name, {"prompt": prompt})
        recorded = recipe_for(task, prompt=prompt).metrics
        rarl_variant = any(m.metric.name == "rarl_format" for m in recorded)
        for recipe, build in LISTS.items():
            if recipe == "rarl" and not rarl_variant:
                continue
            try:
                specs = build(task, prompt)
            except ConfigError:  # the recipe does not train this variant (e.g. vrft_aug on a plain prompt)
                continue
            for spec in specs:
                label = component_label(spec, recorded)
                if spec.metric in MODEL_REWARDS:
                    assert label == spec.metric and label not in {m.label for m in recorded}
                    continue
                checked += 1
                if not any(m.label == label and m.metric.name == spec.metric and m.args == spec.args
                           for m in recorded):
                    missing.append(f"{name}/{prompt} {recipe}: {label}")
    assert not missing, missing
    assert checked > 150  # 27 task files: every one with a think variant is checked


def test_vrft_aug_components_are_named_by_their_metric() -> None:
    """The issue's example: `<think>x</think>The answer is \\boxed{0}` is 0 for the strict format VRFT-Aug
    rewards and 1 for the lenient one the run also records: two names now, never one name for both."""
    size = load_task("phantom_size", {"prompt": "r1"})
    specs = vrft_rewards(size, "r1", VrftOptions())
    recorded = recipe_for(size, prompt="r1").metrics
    assert [component_label(s, recorded) for s in specs] == ["mfrs", "format_strict"]
    box = load_task("phantom_box", {"prompt": "r1"})
    recorded = recipe_for(box, prompt="r1").metrics
    assert [component_label(s, recorded) for s in vrft_rewards(box, "r1", VrftOptions())] == [
        "iou_gt_50", "format_strict"]
    assert [component_label(s, recorded) for s in vrft_rewards(box, "r1", VrftOptions(iou_threshold=0.75))] \
        == ["iou_accuracy(strict=True, threshold=0.75)", "format_strict"]


def test_a_reward_may_not_borrow_a_column_of_another_metric() -> None:
    """`as: format_compliance` on the strict format would print under the run's lenient column: refused."""
    task = load_task("phantom_size", {"prompt": "r1"})
    recorded = recipe_for(task, prompt="r1").metrics
    strict = {"format": "think_boxed"}
    borrowed = RewardSpec(metric="format_compliance", args=strict, label="format_compliance")
    with pytest.raises(ConfigError, match="label 'format_compliance'.*run's column for format_compliance"):
        component_label(borrowed, recorded)
    same = RewardSpec(metric="format_compliance", args={"format": "think_boxed"}, label="format_strict")
    assert component_label(same, recorded) == "format_strict"


def _box_texts(target: list[float]) -> list[str]:
    x1, y1, x2, y2 = target
    half = [x1, y1, (x1 + x2) / 2, y2]  # IoU 0.5: rewarded 0 (> 0.5), iou_acc_50 (>= 0.5) records 1
    return [f"<think>x</think><answer>{json.dumps(target)}</answer>",
            f"<think>x</think><answer>{json.dumps(half)}</answer>",
            f"<think>x</think>\n<answer>{json.dumps(target)}</answer>",
            f"<think>x</think><answer>{{\"box\": {json.dumps(target)}}}</answer>",
            f"<answer>{json.dumps(target)}</answer>", "no box"]


CASES = [  # task, prompt, recipe (None: grpo's defaults), texts (a function of the first sample's target)
    ("phantom_presence", "r1", None, lambda t: ["<think>x</think><answer>yes</answer>", "<answer>no</answer>",
                                                "<think>x</think> <answer>No.</answer> more", "yes", ""]),
    ("phantom_size", "r1", "vrft_aug", lambda t: ["<think>x</think>\\boxed{1}",
                                                  "<think>x</think>The answer is \\boxed{0}",
                                                  "<think>x</think>\\boxed{2} and more", "\\boxed{3}", "1"]),
    ("phantom_box", "r1", "vrft_aug", _box_texts),
    ("phantom_presence", "r1", "rarl", lambda t: ["<think>x</think><answer>yes</answer>",
                                                  "<answer>no</answer>", "<think>x", "yes"]),
]


@pytest.mark.parametrize(("task_name", "prompt", "recipe", "texts"), CASES,
                         ids=[f"{c[0]}-{c[2] or 'grpo'}" for c in CASES])
def test_reward_prints_what_run_records(tmp_path: Path, capsys: pytest.CaptureFixture[str], task_name: str,
                                        prompt: str, recipe: str | None,
                                        texts: Callable[[object], list[str]]) -> None:
    """The same texts through `medharness reward --json` and `medharness run --backend replay`: each component
    (RARL's format beside the accuracy; its model-backed components are not recorded by `run`) equals the
    run's per-sample score of the same name."""
    samples = load_task(task_name).load_samples("test")[:3]
    rows = [(s.id, text) for s in samples for text in texts(s.target)]
    completions = tmp_path / "completions.jsonl"
    completions.write_text("".join(json.dumps({"sample_id": i, "text": t}) + "\n" for i, t in rows))
    args = ["reward", "--task", task_name, "--prompt", prompt, "--completions", str(completions), "--json"]
    if recipe == "rarl":  # its format reward alone (the others need models)
        args += ["--rewards", json.dumps([{"metric": "rarl_format"}, {"metric": "yes_no_accuracy"}])]
    elif recipe:
        args += ["--recipe", recipe]
    capsys.readouterr()
    assert main(args) == 0
    rewarded = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    recorded: dict[tuple[str, str], dict[str, float | None]] = {}
    for k in range(len(texts(samples[0].target))):  # one replay run per text (a run answers each id once)
        preds = tmp_path / f"preds{k}.jsonl"
        preds.write_text("".join(json.dumps({"id": s.id, "prediction": texts(s.target)[k]}) + "\n"
                                 for s in samples))
        out = tmp_path / f"run{k}"
        assert main(["run", "--model", str(preds), "--backend", "replay", "--tasks", task_name, "-T",
                     f"{task_name}.prompt={prompt}", "--limit", "3", "--output", str(out), "--no-cache"]) == 0
        for line in (out / "samples" / f"{task_name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            recorded[(row["sample"]["id"], row["generation"]["text"])] = row["scores"]
    assert len(rewarded) == len(rows) > 0
    for row in rewarded:
        scores = recorded[(row["sample_id"], row["text"])]
        assert set(row["rewards"]) <= set(scores), (row["rewards"], scores)
        for label, value in row["rewards"].items():
            assert value == scores[label], (label, row["text"], value, scores[label])
    values = {label: {r["rewards"][label] for r in rewarded} for label in rewarded[0]["rewards"]}
    assert all(len(v) > 1 for v in values.values()), values  # each component both rewards and withholds
