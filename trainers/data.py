"""A task's samples as TRL datasets, one function per format, plus the pre-flight image-token check.

- GRPO (`prompt`): a conversational `prompt` + `images` (TRL 1.16's GRPOTrainer reads `images`, or `image`).
- SFT (`completion`): `prompt` + `completion`, the assistant turn written from the gold in the prompt
  variant's format; TRL computes the loss on the completion only (`completion_only_loss` null: on here).
- DPO (`preference`): `prompt`, `chosen`, `rejected` + `images`.
Every row also carries `sample_id` (the reward functions get it as a keyword argument). Prompts are rendered
by `Task.render`, the same call `run` uses; image parts are `{"type": "image"}` placeholders that TRL fills
from `images`. Images are resized once to the processor's pixel budget with the processor's own
`smart_resize`, so the trainer, vLLM and `run` count the same image tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.backends.vlm_common import chat_template_owner
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import GenerationSettings, Sample
from medharness.taskfiles.splits import read_sample_ids, select_pinned
from medharness.taskfiles.task import Task
from medharness.trainers.schema import TrainConfig

log = logging.getLogger(__name__)
Message = dict[str, Any]


def no_samples_error(task: Task, why: str) -> DataError:
    return DataError(
        f"task {task.name} has no training samples ({why}). Give some: a train split in the task's source "
        f"(`samples: {{split: train}}`), `--samples FILE` (a list of sample ids of that split), or a k-shot "
        f"file from `medharness split --task {task.name} --kshot K --output FILE`.")


def select_samples(task: Task, config: TrainConfig, samples_file: Path | None = None) -> list[Sample]:
    """The training samples: the configured split, narrowed to a pinned id file, then `limit`."""
    split = config.samples.split
    try:
        samples = task.load_samples(split)
    except Exception as exc:  # noqa: BLE001 - a missing split looks different in every source
        raise no_samples_error(task, f"split '{split}' cannot be loaded: {exc}") from None
    file = samples_file or (Path(config.samples.file) if config.samples.file else None)
    if file is not None:
        samples = select_pinned(task.name, samples, read_sample_ids(file), file)
    if config.samples.balanced:
        samples = balance(samples)
    if config.samples.limit is not None:
        samples = samples[: config.samples.limit]
    if not samples:
        raise no_samples_error(task, f"split '{split}' is empty")
    return samples


def balance(samples: Sequence[Sample]) -> list[Sample]:
    """The first k samples of each gold answer, in their order, k the rarest answer's count."""
    by_gold: dict[str, list[Sample]] = {}
    for s in samples:
        by_gold.setdefault(json.dumps(s.target, sort_keys=True), []).append(s)
    k = min((len(v) for v in by_gold.values()), default=0)
    keep = {id(s) for group in by_gold.values() for s in group[:k]}
    return [s for s in samples if id(s) in keep]


# -- images -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PixelBudget:
    factor: int
    min_pixels: int
    max_pixels: int


def pixel_budget(processor: Any, config: TrainConfig) -> PixelBudget | None:
    """The processor's pixel budget (Qwen-style `size = {shortest_edge, longest_edge}`), with the config's
    `min_pixels` / `max_pixels` applied to the processor too (so the saved processor evaluates the same)."""
    ip = getattr(processor, "image_processor", None)
    size = getattr(ip, "size", None)  # a dict, or transformers 5's SizeDict
    patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
    low, high = _size_field(size, "shortest_edge"), _size_field(size, "longest_edge")
    if not low or not high or not patch or not merge:
        if config.max_pixels or config.min_pixels:
            raise ConfigError("max_pixels/min_pixels: this processor has no Qwen-style pixel budget")
        return None
    budget = PixelBudget(int(patch) * int(merge), int(config.min_pixels or low),
                         int(config.max_pixels or high))
    for key, value in (("shortest_edge", budget.min_pixels), ("longest_edge", budget.max_pixels)):
        if isinstance(size, dict):
            size[key] = value
        else:
            setattr(size, key, value)
    for attr, value in (("min_pixels", budget.min_pixels), ("max_pixels", budget.max_pixels)):
        if getattr(ip, attr, None) is not None:
            setattr(ip, attr, value)
    return budget


def _size_field(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def resize(image: Any, budget: PixelBudget | None) -> Any:
    """The image in RGB at the size the processor would resize it to (its own `smart_resize`)."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    image = image.convert("RGB")
    if budget is None:
        return image
    height, width = smart_resize(image.height, image.width, factor=budget.factor,
                                 min_pixels=budget.min_pixels, max_pixels=budget.max_pixels)
    if (width, height) == image.size:
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


# -- control runs (`ablate:`) -------------------------------------------------------------------------------

ImagesOf = Callable[[Sample], list[Any]]
GoldOf = Callable[[Sample], str]


def ablated(mode: str | None, samples: Sequence[Sample], images: ImagesOf, gold: GoldOf | None,
            seed: int) -> tuple[ImagesOf, GoldOf | None]:
    """The image and gold functions of a control run that must not learn: every image black (`blank`) or
    seeded noise (`noise`), each sample given another sample's images (`shuffle`) or gold answer (`labels`,
    a seeded derangement, `run --ablate`'s). Replacements are deterministic from the seed and sample id."""
    from medharness.taskfiles import ablation

    if mode is None:
        return images, gold
    by_id = {s.id: s for s in samples}
    if mode in ("shuffle", "labels"):
        partner = ablation.partners([s.id for s in samples], seed)
        if mode == "shuffle":
            return (lambda s: images(by_id[partner[s.id]])), gold
        if gold is None:
            raise ConfigError("ablate: labels needs a recipe trained on gold answers (sft)")
        return images, lambda s: gold(by_id[partner[s.id]])
    if mode == "blank":
        return (lambda s: [ablation.blank(im) for im in images(s)]), gold
    return (lambda s: [ablation.noise(im, seed, s.id) for im in images(s)]), gold


# -- rows ---------------------------------------------------------------------------------------------------

def prompt_messages(task: Task, sample: Sample) -> list[Message]:
    """The rendered prompt as TRL conversational messages (image parts as placeholders)."""
    prompt = task.render(sample, GenerationSettings())
    return [{"role": m.role,
             "content": [{"type": "image", "text": None} if p.type == "image" else
                         {"type": "text", "text": p.text or ""} for p in m.content]}
            for m in prompt.messages]


def assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def rows_for(fmt: str, task: Task, samples: Sequence[Sample], images: Callable[[Sample], list[Any]],
             gold: Callable[[Sample], str] | None = None, rejected: dict[str, str] | None = None,
             styles: tuple[dict[str, str], dict[str, Task]] | None = None) -> list[dict[str, Any]]:
    """Dataset rows in one of the three formats ("prompt", "completion", "preference"). With `styles`
    (sample id -> style, style -> task with that prompt variant) each sample is rendered in its style and the
    row records `prompt_style`."""
    rows = []
    for s in samples:
        base: dict[str, Any] = {"sample_id": s.id, "images": images(s)}
        if styles is not None:
            base["prompt_style"] = styles[0][s.id]
        prompt = prompt_messages(styles[1][styles[0][s.id]] if styles is not None else task, s)
        if fmt == "prompt":
            rows.append({**base, "prompt": prompt})
        elif fmt == "completion":
            assert gold is not None
            rows.append({**base, "prompt": prompt, "completion": assistant(gold(s))})
        elif fmt == "preference":
            assert gold is not None and rejected is not None
            if s.id in rejected:
                rows.append({**base, "prompt": prompt, "chosen": assistant(gold(s)),
                             "rejected": assistant(rejected[s.id])})
        else:
            raise ConfigError(f"unknown dataset format {fmt!r}")
    return rows


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    if not rows:
        raise DataError("no training rows (for DPO: no sample has a rejected answer from the declared "
                        "source)")
    return Dataset.from_list(rows)


# -- pre-flight ---------------------------------------------------------------------------------------------

def _image_shapes(images: Sequence[Any]) -> tuple[Any, ...] | None:
    """What the processor's token counts depend on in a row's images: sizes and modes (None: not PIL)."""
    if not all(hasattr(im, "size") and hasattr(im, "mode") for im in images):
        return None
    return tuple((im.size, im.mode) for im in images)


def check_image_tokens(rows: Sequence[dict[str, Any]], processor: Any, max_length: int | None = None,
                       lengths: dict[str, int] | None = None) -> int:
    """Before training: every row's image placeholders match its images, its image tokens match its image
    features, and (SFT/DPO) it fits `max_length` untruncated. Raises naming the sample; returns the longest
    row in tokens (each row's count into `lengths` when given: for GRPO rows, the prompt's tokens). A row
    whose text and image sizes equal an earlier row's is not processed again (the processor's token counts
    depend on nothing else)."""
    owner = chat_template_owner(processor)
    tokenizer = getattr(processor, "tokenizer", processor)
    token = getattr(processor, "image_token", None)
    image_id = tokenizer.convert_tokens_to_ids(token) if isinstance(token, str) else None
    merge = int(getattr(getattr(processor, "image_processor", None), "merge_size", 1) or 1)
    longest = 0
    checked: dict[tuple[Any, ...], int] = {}  # (text, image shapes) -> tokens, for rows that passed
    for row in rows:
        sid = row["sample_id"]
        answer = row.get("completion") or row.get("chosen")
        messages = [*row["prompt"], *(answer or [])]
        n_parts = sum(1 for m in messages for p in m["content"] if p.get("type") == "image")
        if n_parts != len(row["images"]):
            raise DataError(f"sample {sid}: the prompt has {n_parts} image parts but {len(row['images'])} "
                            "images")
        plain = [{"role": m["role"], "content": [{"type": "image"} if p["type"] == "image" else
                                                 {"type": "text", "text": p["text"]} for p in m["content"]]}
                 for m in messages]
        text = owner.apply_chat_template(plain, tokenize=False, add_generation_prompt=answer is None)
        shapes = _image_shapes(row["images"])
        key = (text, shapes) if shapes is not None else None
        if key is not None and key in checked:
            longest = max(longest, checked[key])
            if lengths is not None:
                lengths[sid] = checked[key]
            continue
        enc = processor(text=[text], images=row["images"] or None, return_tensors="pt")
        ids = enc["input_ids"][0]
        longest = max(longest, int(ids.shape[0]))
        if lengths is not None:
            lengths[sid] = int(ids.shape[0])
        grid = enc.get("image_grid_thw")
        if image_id is not None and grid is not None:
            features = int(grid.prod(dim=-1).sum().item()) // (merge * merge)
            tokens = int((ids == image_id).sum().item())
            if tokens != features:
                raise DataError(f"sample {sid}: {tokens} image tokens but {features} image features")
        if max_length is not None and ids.shape[0] > max_length:
            raise DataError(f"sample {sid}: {int(ids.shape[0])} tokens > max_length {max_length}: truncation "
                            "would cut the answer or image tokens (set trl.max_length: null)")
        if key is not None:
            checked[key] = int(ids.shape[0])
    return longest


def cap_prompts(rows: list[dict[str, Any]], lengths: dict[str, int], cap: int | None,
                data_format: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """GRPO's prompt cap (`samples.max_prompt_tokens`; the GRPO study's "maximum prompt length of 1024
    tokens", which TRL 1.16 has no setting for): the rows whose prompt is longer are left out, never truncated
    (truncation would cut image tokens), and counted. Returns the kept rows and the record for
    OUTPUT/prompt_cap.json (None without a cap)."""
    if cap is None:
        return rows, None
    if data_format != "prompt":
        raise ConfigError("samples.max_prompt_tokens caps GRPO prompts; this recipe trains on prompt + "
                          "answer (use trl.max_length)")
    kept = [r for r in rows if lengths[r["sample_id"]] <= cap]
    over = {r["sample_id"]: lengths[r["sample_id"]] for r in rows if lengths[r["sample_id"]] > cap}
    if over:
        log.warning("samples.max_prompt_tokens %d: %d of %d prompts are longer and left out (%s)", cap,
                    len(over), len(rows), ", ".join(list(over)[:5]) + (", ..." if len(over) > 5 else ""))
    if not kept:
        raise DataError(f"samples.max_prompt_tokens {cap}: every prompt is longer (shortest "
                        f"{min(lengths.values())} tokens)")
    return kept, {"max_prompt_tokens": cap, "kept": len(kept), "left_out": len(over), "samples": over}


def prompt_cap_callback(path: Path, record: dict[str, Any]) -> Any:
    """A TRL callback writing the prompt cap's record to `path` as training begins (the output folder is
    prepared by then), from the main process."""
    from transformers import TrainerCallback

    class PromptCapRecord(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    return PromptCapRecord()


def attention_kernel(name: str, use_gpu: bool) -> str:
    """The attention kernel to load: `flash_attention_2_or_sdpa` is flash_attention_2 on a GPU where the
    flash_attn package is installed (the GRPO study's "Flash Attention 2"), else sdpa."""
    if name != "flash_attention_2_or_sdpa":
        return name
    import importlib.util

    if use_gpu and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    log.warning("attn_implementation %s: sdpa (%s)", name,
                "flash_attn is not installed" if use_gpu else "no GPU")
    return "sdpa"
