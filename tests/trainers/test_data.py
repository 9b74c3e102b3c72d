"""Training data: phantom train split, sample selection, formats, pixel budget and the pre-flight check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medharness.core.errors import ConfigError, DataError
from medharness.taskfiles.phantom import open_image
from medharness.taskfiles.splits import kshot, write_sample_ids
from medharness.taskfiles.task import load_task
from medharness.trainers.config import Layers, build_config
from medharness.trainers.data import (
    ablated,
    attention_kernel,
    cap_prompts,
    check_image_tokens,
    pixel_budget,
    prompt_cap_callback,
    resize,
    rows_for,
    select_samples,
)
from medharness.trainers.prepare import load_train_task
from medharness.trainers.targets import gold_text

PHANTOM = ["phantom_presence", "phantom_count", "phantom_side", "phantom_size", "phantom_box"]


def _config(**data):  # type: ignore[no-untyped-def]
    return build_config(Layers(data={"recipe": "grpo", "model": "m", **data}))


def _digest(ref: str) -> str:
    return hashlib.sha256(open_image(ref).tobytes()).hexdigest()


@pytest.mark.parametrize("name", PHANTOM)
def test_phantom_train_split_never_repeats_a_test_image(name: str) -> None:
    task = load_task(name)
    train, test = task.load_samples("train"), task.load_samples("test")
    assert len(test) == 200 and len(train) == {"phantom_presence": 2018, "phantom_box": 2000}.get(name, 200)
    train_refs = {r for s in train for r in s.images}
    test_refs = {r for s in test for r in s.images}
    assert not train_refs & test_refs  # different generator seeds (test: seed, train: seed + 1000)
    if name == "phantom_presence":  # pixels too: no train image equals a test image
        train_px = {_digest(r) for r in sorted(train_refs)[:100]}
        test_px = {_digest(r) for r in sorted(test_refs)[:100]}
        assert not train_px & test_px and len(train_px) == 100


def test_select_samples_split_file_and_limit(tmp_path: Path) -> None:
    task = load_task("phantom_presence")
    assert len(select_samples(task, _config(task="phantom_presence"))) == 2018
    chosen = kshot(task.load_samples("train"), 3, seed=1)
    file = tmp_path / "k3.json"
    write_sample_ids(file, task.name, chosen)
    picked = select_samples(task, _config(samples={"file": str(file)}))
    assert [s.id for s in picked] == [s.id for s in chosen] and len(picked) == 6  # 3 yes + 3 no
    assert len(select_samples(task, _config(samples={"limit": 5}))) == 5
    # class-balanced: the first 500 of each answer (the split keeps its mix: 1,518 "yes", 500 "no"), in order
    balanced = select_samples(task, _config(samples={"balanced": True}))
    train = task.load_samples("train")
    assert [s.target for s in train].count("no") == 500 and len(balanced) == 1000
    assert [s.target for s in balanced].count("yes") == 500
    assert [s.id for s in balanced] == [s.id for s in train if s in balanced]
    yes = [s.id for s in train if s.target == "yes"]
    assert {s.id for s in balanced if s.target == "yes"} == set(yes[:500])
    assert len(select_samples(task, _config(samples={"balanced": True, "limit": 7}))) == 7
    assert [s.id for s in select_samples(task, _config(samples={"file": str(file), "balanced": True}))] == \
        [s.id for s in chosen]  # 3 + 3 already


def test_task_without_training_samples(tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("a|is it?|yes\n")
    task_file = tmp_path / "toy.yaml"
    task_file.write_text(
        'name: toy\nversion: "1"\ndescription: t\ncard: {licence: x, citation: y}\n'
        "sources:\n  - {kind: local, path: {test: q.txt}, format: psv, fieldnames: [id, question, answer]}\n"
        "columns: {id: id}\nprompts: {default: p, variants: {p: {user: '{question}'}}}\n")
    config = _config(task=str(task_file), data_dir=str(tmp_path))
    task = load_train_task(config)
    with pytest.raises(DataError, match=r"task toy has no training samples \(split 'train'.*--samples FILE.*"
                                        r"medharness split --task toy"):
        select_samples(task, config)


@pytest.fixture(scope="module")
def processor(tiny_models: dict[str, Path]):  # type: ignore[no-untyped-def]
    from medharness.core.torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_models["qwen2_5_vl"])


def test_pixel_budget_matches_the_processor(processor) -> None:  # type: ignore[no-untyped-def]
    budget = pixel_budget(processor, _config())
    assert budget is not None and (budget.factor, budget.min_pixels, budget.max_pixels) == (28, 3136, 12544)
    image = resize(open_image("phantom:1000/0/224"), budget)
    assert image.size == (112, 112)  # what the processor itself resizes a 224 x 224 image to
    smaller = pixel_budget(processor, _config(max_pixels=56 * 56))
    assert resize(open_image("phantom:1000/0/224"), smaller).size == (56, 56)
    assert processor.image_processor.size.longest_edge == 56 * 56  # the saved processor evaluates the same


@pytest.mark.parametrize("fmt", ["prompt", "completion", "preference"])
def test_formats_and_preflight(processor, fmt: str) -> None:  # type: ignore[no-untyped-def]
    task = load_task("phantom_presence", {"prompt": "r1"})
    samples = task.load_samples("train")[:3]
    budget = pixel_budget(processor, _config())
    rows = rows_for(fmt, task, samples, lambda s: [resize(task.open_image(r), budget) for r in s.images],
                    lambda s: gold_text(task, "r1", s),
                    {s.id: "<think>x</think><answer>no</answer>" for s in samples})
    assert [r["sample_id"] for r in rows] == [s.id for s in samples]
    first = rows[0]
    assert first["prompt"][0]["content"][0] == {"type": "image", "text": None}
    if fmt == "completion":
        assert set(first) == {"sample_id", "images", "prompt", "completion"}
        assert first["completion"] == [{"role": "assistant", "content": [
            {"type": "text", "text": gold_text(task, "r1", samples[0])}]}]
    if fmt == "preference":
        assert set(first) == {"sample_id", "images", "prompt", "chosen", "rejected"}
    assert check_image_tokens(rows, processor) > 16
    with pytest.raises(DataError, match=f"sample {samples[0].id}: .* > max_length 20"):
        check_image_tokens(rows, processor, max_length=20)
    bad = [{**first, "images": first["images"] * 2}]
    with pytest.raises(DataError, match=f"sample {samples[0].id}: the prompt has 1 image parts but 2 images"):
        check_image_tokens(bad, processor)


class CountingProcessor:
    """The processor, counting the rows it is asked to process."""

    def __init__(self, processor) -> None:  # type: ignore[no-untyped-def]
        self.processor, self.calls = processor, 0

    def __call__(self, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.processor(**kwargs)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.processor, name)


def test_preflight_processes_each_distinct_row_once(processor) -> None:  # type: ignore[no-untyped-def]
    """Rows with the same text and image sizes are one check (the demo's 64 rows: two); a row that differs in
    either is checked on its own, so a bad one is still found and named."""
    task = load_task("phantom_presence")
    samples = task.load_samples("train")[:6]
    budget = pixel_budget(processor, _config())
    rows = rows_for("completion", task, samples,
                    lambda s: [resize(task.open_image(r), budget) for r in s.images],
                    lambda s: gold_text(task, "plain", s))
    counting = CountingProcessor(processor)
    longest = check_image_tokens(rows, counting)
    golds = {gold_text(task, "plain", s) for s in samples}
    assert counting.calls == len(golds) == 2  # yes / no: the prompt and the image size are the same
    assert longest == max(check_image_tokens([r], processor) for r in rows)
    smaller = {**rows[3], "images": [rows[3]["images"][0].resize((28, 28))]}
    counting = CountingProcessor(processor)
    assert check_image_tokens([*rows, smaller], counting) == longest  # fewer image tokens, not the longest
    assert counting.calls == 3
    doubled = {**rows[4], "images": rows[4]["images"] * 2}
    with pytest.raises(DataError, match=f"sample {samples[4].id}: the prompt has 1 image parts but 2 images"):
        check_image_tokens([*rows, doubled], processor)


def test_control_runs_replace_images_or_answers_deterministically() -> None:
    """`ablate:` feeds the trainer black or noise images, another sample's images, or another sample's answer;
    the same seed gives the same replacement, and the real data is untouched."""
    import numpy as np

    task = load_task("phantom_presence")
    samples = task.load_samples("train")[:6]

    def images(s):  # type: ignore[no-untyped-def]
        return [open_image(r) for r in s.images]

    def gold(s):  # type: ignore[no-untyped-def]
        return f"gold of {s.id}"

    same_images, same_gold = ablated(None, samples, images, gold, seed=0)
    assert same_images is images and same_gold is gold
    blank_images, _ = ablated("blank", samples, images, gold, seed=0)
    assert not np.asarray(blank_images(samples[0])[0]).any()
    noise_images, _ = ablated("noise", samples, images, gold, seed=0)
    a, b = (np.asarray(noise_images(samples[0])[0]), np.asarray(ablated("noise", samples, images, gold, 0)[0]
                                                              (samples[0])[0]))
    assert (a == b).all() and a.std() > 50  # seeded noise, not the scan
    shuffled, kept = ablated("shuffle", samples, images, gold, seed=0)
    own = {_digest(r) for s in samples for r in s.images}
    moved = [hashlib.sha256(shuffled(s)[0].tobytes()).hexdigest() for s in samples]
    assert kept is gold and set(moved) == own
    assert all(m != _digest(s.images[0]) for m, s in zip(moved, samples, strict=True))  # nobody keeps its own
    _, swapped = ablated("labels", samples, images, gold, seed=0)
    assert swapped is not None
    answers = [swapped(s) for s in samples]
    assert sorted(answers) == sorted(gold(s) for s in samples)
    assert all(x != gold(s) for x, s in zip(answers, samples, strict=True))
    with pytest.raises(ConfigError, match="labels needs a recipe trained on gold answers"):
        ablated("labels", samples, images, None, seed=0)


def test_a_label_control_run_of_a_reward_recipe_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    """`ablate: labels` swaps SFT's gold answers; GRPO learns from rewards, so it is refused, naming the
    recipe, before any model is loaded (the model path here does not exist) or any output is written."""
    from medharness.trainers.config import load_layers
    from medharness.trainers.prepare import prepare

    flags = {"task": "phantom_presence", "model": str(tmp_path / "none")}
    layers = load_layers("grpo", ["tiny_cpu"], None, flags, ["ablate=labels"])
    with pytest.raises(ConfigError, match="ablate: labels .* recipe grpo learns from rewards"):
        prepare(build_config(layers), layers, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prompt_cap_leaves_longer_prompts_out_and_counts_them(processor, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 21 item 9: the GRPO study's 1,024-token prompt cap (TRL 1.16 has none): prompts longer than
    `samples.max_prompt_tokens`, counted as the processor counts them (image tokens included), are left out,
    never truncated, and listed in prompt_cap.json."""
    import json

    task = load_task("phantom_presence", {"prompt": "r1"})
    samples = task.load_samples("train")[:4]
    budget = pixel_budget(processor, _config(max_pixels=112 * 112))  # the module's processor may be smaller
    rows = rows_for("prompt", task, samples,
                    lambda s: [resize(task.open_image(r), budget) for r in s.images], None)
    rows[1] = {**rows[1], "images": [rows[1]["images"][0].resize((28, 28))]}  # fewer image tokens
    lengths: dict[str, int] = {}
    check_image_tokens(rows, processor, None, lengths)
    assert set(lengths) == {s.id for s in samples}
    short, long_ = lengths[samples[1].id], lengths[samples[0].id]
    assert long_ > short
    assert cap_prompts(rows, lengths, None, "prompt") == (rows, None)  # no cap: every row
    kept, record = cap_prompts(rows, lengths, short, "prompt")
    assert [r["sample_id"] for r in kept] == [samples[1].id]
    assert kept[0] is rows[1]  # a kept row is untouched (never truncated)
    assert record == {"max_prompt_tokens": short, "kept": 1, "left_out": 3,
                      "samples": {s.id: long_ for s in samples if s.id != samples[1].id}}
    assert len(cap_prompts(rows, lengths, long_, "prompt")[0]) == 4
    with pytest.raises(DataError, match="every prompt is longer"):
        cap_prompts(rows, lengths, short - 1, "prompt")
    with pytest.raises(ConfigError, match="caps GRPO prompts"):
        cap_prompts(rows, lengths, short, "completion")
    # written as training begins (the output folder must be empty until then), by the main process only
    from types import SimpleNamespace

    callback = prompt_cap_callback(tmp_path / "prompt_cap.json", record)
    callback.on_train_begin(None, SimpleNamespace(is_world_process_zero=False), None)
    assert not (tmp_path / "prompt_cap.json").exists()
    callback.on_train_begin(None, SimpleNamespace(is_world_process_zero=True), None)
    assert json.loads((tmp_path / "prompt_cap.json").read_text()) == record


def test_flash_attention_where_installed_else_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    assert attention_kernel("sdpa", True) == "sdpa" and attention_kernel("eager", False) == "eager"
    assert attention_kernel("flash_attention_2_or_sdpa", False) == "sdpa"  # no GPU
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else
                        real(name, *a))
    assert attention_kernel("flash_attention_2_or_sdpa", True) == "flash_attention_2"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else
                        real(name, *a))
    assert attention_kernel("flash_attention_2_or_sdpa", True) == "sdpa"
    assert _config(attn_implementation="flash_attention_2_or_sdpa").attn_implementation == \
        "flash_attention_2_or_sdpa"
