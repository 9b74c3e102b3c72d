"""Tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints, built fully offline for smoke tests and CI.

The tokenizer is a byte-level BPE trained in memory (so any text encodes) with Qwen's special tokens
and `<think>`/`<answer>` tags; the model is a real Qwen2(.5)-VL architecture shrunk to about 0.23 M
parameters (text hidden 64, 2 layers, 2 heads, 1 KV head of size 32; vision depth 2, width 32), and
the processor resizes every image to between 56x56 and 112x112 pixels (4 to 16 image tokens).
`size="small"` is the same tokenizer and processor on a model that can learn the phantom tasks on a CPU:
text hidden 192, 4 layers, 6 heads (2 KV heads of size 32), vision depth 4, width 64 (about 2 M parameters).
`rope="grid"` changes two numbers of the text model's multimodal rotary embedding (`ROPES`) so that its
attention can tell a 4 x 4 grid of image tokens apart by place, which boxing a lesion needs.
Never commit a built folder: transformers 4 and 5 write incompatible configs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.core.errors import ConfigError
from medharness.core.torchvision_shim import ensure_torchvision_importable

log = logging.getLogger(__name__)

ARCHS = ("qwen2_vl", "qwen2_5_vl")

# The text model's M-RoPE: (rope_theta, mrope_section), the section splitting the 16 frequencies of a
# 32-wide head between the temporal, height and width positions in that order, highest frequencies first.
# "qwen" is Qwen2-VL's own: theta 1e6 leaves the height and width sections below 0.032 and 0.0002 rad a
# grid step, so across the 4 tokens of a 112-pixel image row the text model cannot tell image tokens apart
# by place (it learns a lesion's size, never where it is). "grid" turns every frequency by 0.36-0.87 rad a
# step (theta 3) and gives height and width 7 frequencies each; text tokens keep all 16, whatever the split.
ROPES: dict[str, tuple[float, list[int]]] = {"qwen": (1_000_000.0, [4, 6, 6]), "grid": (3.0, [2, 7, 7])}


@dataclass(frozen=True)
class Size:
    """The dimensions that differ between sizes (head size stays 32, the smallest vLLM CPU accepts)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vision_depth: int
    vision_width: int
    vision_heads: int


SIZES = {
    "tiny": Size(hidden=64, intermediate=128, layers=2, heads=2, kv_heads=1, vision_depth=2, vision_width=32,
                 vision_heads=2),
    "small": Size(hidden=192, intermediate=512, layers=4, heads=6, kv_heads=2, vision_depth=4,
                  vision_width=64, vision_heads=4),
}

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")  # plain added tokens: one id each, not skipped
VOCAB_SIZE = 1024
MIN_PIXELS, MAX_PIXELS = 56 * 56, 112 * 112
PATCH, MERGE, TEMPORAL_PATCH = 14, 2, 2

# Modelled on the Qwen2-VL-Instruct template: default system turn, one pad token per image/video.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = (
    "The chest x-ray shows no acute cardiopulmonary abnormality. There is a small left pleural effusion. "
    "The heart size is normal. Findings: consolidation in the right lower lobe, consistent with pneumonia. "
    "Impression: no fracture, no pneumothorax. Question: what abnormality is visible in this image? "
    "Answer: yes no A B C D. The MRI of the brain shows a lesion in the left temporal lobe. CT abdomen "
    "with contrast demonstrates a hepatic cyst. Histopathology slide with tumor cells. Dermoscopy image "
    "of a benign nevus. Retinal fundus photograph with diabetic retinopathy. You are a helpful assistant. "
    "user assistant system <think> reasoning </think> <answer> final </answer> "
    "0 1 2 3 4 5 6 7 8 9 10 100 2024 % . , ; : ? ! "
)


@dataclass(frozen=True)
class _Ids:
    pad: int
    im_end: int
    image: int
    video: int
    vision_start: int
    vision_end: int


def build_tokenizer() -> Any:
    """A byte-level BPE (all 256 bytes in the alphabet, so no unknown tokens) as a `Qwen2Tokenizer`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(QWEN_SPECIAL_TOKENS) - len(TAG_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator([_CORPUS] * 50 + _CORPUS.split(), trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]

    # transformers' annotations say str merges and a str unk token; pairs and None are what it takes at
    # run time
    tok = Qwen2Tokenizer(vocab=trained["vocab"], merges=merges, unk_token=None,  # type: ignore[arg-type]
                         bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         model_max_length=4096)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS],
                   special_tokens=True)
    tok.add_tokens(list(TAG_TOKENS))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _ids(tok: Any) -> _Ids:
    get = tok.convert_tokens_to_ids
    return _Ids(pad=get("<|endoftext|>"), im_end=get("<|im_end|>"), image=get("<|image_pad|>"),
                video=get("<|video_pad|>"), vision_start=get("<|vision_start|>"),
                vision_end=get("<|vision_end|>"))


def _config(arch: str, tok: Any, size: str = "tiny", rope: str = "qwen") -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    ids, dims = _ids(tok), SIZES[size]
    theta, section = ROPES[rope]
    text = {
        "vocab_size": len(tok), "hidden_size": dims.hidden, "intermediate_size": dims.intermediate,
        "num_hidden_layers": dims.layers, "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,  # head dim 32: the smallest vLLM CPU accepts
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        # mrope_section sums to head_dim / 2 = 16 (temporal, height, width)
        "rope_parameters": {"rope_type": "default", "rope_theta": theta, "mrope_section": section},
        "bos_token_id": ids.pad, "eos_token_id": ids.im_end, "pad_token_id": ids.pad,
    }
    patches = {"patch_size": PATCH, "spatial_merge_size": MERGE, "temporal_patch_size": TEMPORAL_PATCH,
               "in_channels": 3, "depth": dims.vision_depth, "num_heads": dims.vision_heads}
    width = dims.vision_width
    cfg: Qwen2VLConfig | Qwen2_5_VLConfig
    if arch == "qwen2_vl":  # vision hidden_size is the merger's output = the text hidden size
        cfg = Qwen2VLConfig(text_config=text, vision_config={
            **patches, "embed_dim": width, "hidden_size": dims.hidden, "mlp_ratio": 2})
    else:
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config={
            **patches, "hidden_size": width, "intermediate_size": 2 * width, "out_hidden_size": dims.hidden,
            "window_size": 112, "fullatt_block_indexes": [dims.vision_depth - 1], "tokens_per_second": 2})
    cfg.image_token_id, cfg.video_token_id = ids.image, ids.video
    cfg.vision_start_token_id, cfg.vision_end_token_id = ids.vision_start, ids.vision_end
    cfg.tie_word_embeddings = False
    return cfg


def _model(arch: str, tok: Any, seed: int, size: str = "tiny", rope: str = "qwen") -> Any:
    """Random weights drawn from a private RNG stream seeded with `seed` (global RNG state untouched)."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLForConditionalGeneration,
    )

    cls = Qwen2VLForConditionalGeneration if arch == "qwen2_vl" else Qwen2_5_VLForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(_config(arch, tok, size, rope)).eval()
    ids = _ids(tok)
    model.generation_config = GenerationConfig(bos_token_id=ids.pad, eos_token_id=[ids.im_end, ids.pad],
                                               pad_token_id=ids.pad, do_sample=False)
    return model


def _processor(arch: str, tok: Any) -> Any:
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    sizes: dict[str, Any] = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS, "patch_size": PATCH,
             "temporal_patch_size": TEMPORAL_PATCH, "merge_size": MERGE}
    cls = Qwen2VLProcessor if arch == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(image_processor=Qwen2VLImageProcessor(**sizes), video_processor=Qwen2VLVideoProcessor(**sizes),
               tokenizer=tok, chat_template=CHAT_TEMPLATE)


def build_tiny_vlm(out_dir: Path | str, arch: str = "qwen2_vl", seed: int = 0, size: str = "tiny",
                   rope: str = "qwen") -> Path:
    """Build a tiny random-weight VLM offline and save it to `out_dir`; return `out_dir`.

    `arch` is "qwen2_vl" or "qwen2_5_vl". The folder holds the model weights and config, its
    generation config (greedy), and the processor with its tokenizer and chat template, so it loads
    with `AutoProcessor` / `AutoModelForImageTextToText` (and the `hf` backend). The same `seed`
    gives the same weights. `size` is "tiny" (the default, about 0.23 M parameters) or "small" (about 2 M,
    enough to learn the phantom tasks on a CPU). `rope` is "qwen" (the default: Qwen2-VL's own) or
    "grid" (`ROPES`: the same weights, a rotary embedding that places image tokens). Needs torch,
    transformers >= 5, tokenizers and torchvision.
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown tiny model arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise ConfigError(f"unknown tiny model size {size!r}; choose one of {', '.join(SIZES)}")
    if rope not in ROPES:
        raise ConfigError(f"unknown tiny model rope {rope!r}; choose one of {', '.join(ROPES)}")
    ensure_torchvision_importable()
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    model = _model(arch, tok, seed, size, rope)
    model.save_pretrained(out)
    _processor(arch, tok).save_pretrained(out)
    log.info("built %s %s (%d params, seed %d, %s rope) in %.1fs -> %s", size, arch,
             sum(p.numel() for p in model.parameters()), seed, rope, time.perf_counter() - start, out)
    return out
