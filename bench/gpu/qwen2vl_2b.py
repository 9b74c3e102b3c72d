"""GPU speed of training and inference on the full-size Qwen2-VL-2B architecture (random weights, no
download).

One script, one call on a GPU machine (a script, not a test; CI never runs it):

1. builds Qwen2-VL-2B-Instruct's architecture from its published config values (28 layers, hidden 1536, 12
   heads, 2 KV heads, vocabulary 151,936, a 32-block 1280-wide vision tower; about 2.2 B parameters) with
   random weights, medharness's offline byte-level tokenizer and the Qwen2-VL image processor with the GRPO
   study's pixel budget (max 401,408 pixels); saved in bfloat16;
2. `medharness train --recipe grpo` on phantom_presence with G = 8 completions of one prompt per step, a fixed
   completion length (`min_new_tokens` = `max_completion_length`, so EOS is ignored), with and without LoRA
   (the `grpo` and `grpo_lora` presets otherwise unchanged; LoRA also with `lora.merge_for_rollouts=false`,
   rollouts through the unmerged adapters): seconds per step, completion tokens/s/GPU (from
   the trainer's logs.jsonl), peak GPU memory (the trainer's `peak_memory_gib`);
3. `medharness run --backend hf` at batch 1, 8 and 32 on the same folder: samples/s and generated tokens/s
   (run.json's `usage.generate_s`: model loading excluded).

Usage: python bench/gpu/qwen2vl_2b.py [--out DIR] [--steps 6] [--completion 256] [--size full|mini]
`--size mini` shrinks every dimension so the whole script runs on a CPU in a couple of minutes (a dry run).
Prints a Markdown table and writes DIR/gpu_bench.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

CLI = [sys.executable, "-m", "medharness.cli"]
# Qwen2-VL-2B-Instruct config.json values (the text model, then the vision tower)
FULL = {"hidden": 1536, "intermediate": 8960, "layers": 28, "heads": 12, "kv_heads": 2, "vocab": 151936,
        "rope_theta": 1_000_000.0, "mrope": [16, 24, 24], "vision_depth": 32, "vision_width": 1280,
        "vision_heads": 16, "max_pixels": 401_408}
MINI = {"hidden": 128, "intermediate": 256, "layers": 2, "heads": 4, "kv_heads": 2, "vocab": 4096,
        "rope_theta": 1_000_000.0, "mrope": [4, 6, 6], "vision_depth": 2, "vision_width": 64,
        "vision_heads": 2, "max_pixels": 112 * 112}
# (label, preset, -C settings): LoRA with its rollouts merged (the default) and unmerged, as TRL generates
RUNS = (("grpo", "grpo", ()), ("grpo_lora", "grpo_lora", ()),
        ("grpo_lora-unmerged (lora.merge_for_rollouts=false)", "grpo_lora",
         ("lora.merge_for_rollouts=false",)))


def build(out: Path, dims: dict[str, Any]) -> int:
    """The architecture with random weights, saved with a processor; returns the parameter count."""
    from medharness.core.torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from medharness.checkpoints.tiny import CHAT_TEMPLATE, _ids, build_tokenizer

    tok = build_tokenizer()
    ids = _ids(tok)
    head = dims["hidden"] // dims["heads"]
    text = {"vocab_size": dims["vocab"], "hidden_size": dims["hidden"],
            "intermediate_size": dims["intermediate"],
            "num_hidden_layers": dims["layers"], "num_attention_heads": dims["heads"],
            "num_key_value_heads": dims["kv_heads"], "head_dim": head,
            "max_position_embeddings": 32768, "tie_word_embeddings": True, "hidden_act": "silu",
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": dims["rope_theta"],
                                "mrope_section": dims["mrope"]},
            "eos_token_id": ids.im_end, "pad_token_id": ids.pad, "bos_token_id": ids.pad}
    vision = {"depth": dims["vision_depth"], "embed_dim": dims["vision_width"], "hidden_size": dims["hidden"],
              "num_heads": dims["vision_heads"], "mlp_ratio": 4, "patch_size": 14, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "in_channels": 3}
    config = Qwen2VLConfig(text_config=text, vision_config=vision)
    config.image_token_id, config.video_token_id = ids.image, ids.video
    config.vision_start_token_id, config.vision_end_token_id = ids.vision_start, ids.vision_end
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=ids.pad, eos_token_id=[ids.im_end, ids.pad],
                                               pad_token_id=ids.pad, do_sample=False)
    model.save_pretrained(out)
    sizes = {"min_pixels": 56 * 56, "max_pixels": dims["max_pixels"], "patch_size": 14,
             "temporal_patch_size": 2, "merge_size": 2}
    Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**sizes),
                     video_processor=Qwen2VLVideoProcessor(**sizes),
                     tokenizer=tok, chat_template=CHAT_TEMPLATE).save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    return n


def train(model: Path, out: Path, preset: str, steps: int, completion: int, gpu: bool,
          label: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """GRPO steps through the real `medharness train`; step time and tokens/s from its logs.jsonl."""
    settings = [*extra, f"trl.max_steps={steps}", "trl.logging_steps=1", f"trl.save_steps={steps * 10}",
                "trl.gradient_accumulation_steps=1", "trl.num_generations=8",
                "trl.per_device_train_batch_size=8", f"trl.max_completion_length={completion}",
                f"trl.generation_kwargs={{min_new_tokens: {completion}}}", "samples.limit=64"]
    if not gpu:
        settings += ["trl.bf16=false", "trl.activation_checkpointing=false"]
    cmd = [*CLI, "train", "--preset", preset, "--task", "phantom_presence", "--model", str(model),
           "--output", str(out), *[x for s in settings for x in ("-C", s)]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    logs = [json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines() if line.strip()]
    steps_logged = [r for r in logs if "step_time" in r]
    timed = steps_logged[1:] or steps_logged  # the first step includes warm-up (kernels, allocator)
    step_time = sum(r["step_time"] for r in timed) / len(timed)
    peaks = [r["peak_memory_gib"] for r in logs if r.get("peak_memory_gib") is not None]
    completion_tokens = 8 * completion
    return {"preset": label, "steps": len(steps_logged), "step_time_s": step_time,
            "completion_tokens_per_s": completion_tokens / step_time,
            "logged_tokens_per_s": sum(r.get("tokens_per_s", 0.0) for r in timed) / len(timed),
            "peak_memory_gib": max(peaks) if peaks else None, "wall_s": wall}


def infer(model: Path, out: Path, batch: int, limit: int, new_tokens: int) -> dict[str, Any]:
    """The hf backend's throughput at one batch size (model load excluded: timed from the run log)."""
    cmd = [*CLI, "run", "--model", str(model), "--backend", "hf", "--tasks", "phantom_presence", "--limit",
           str(limit), "--batch-size", str(batch), "--max-new-tokens", str(new_tokens), "--no-cache",
           "--no-progress", "--output", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    info = json.loads((out / "run.json").read_text())
    seconds = info["usage"]["generate_s"]  # time inside generation: model loading excluded
    tokens = info["tasks"]["phantom_presence"]["tokens"]["completion"]
    return {"batch": batch, "samples": limit, "generate_s": seconds, "completion_tokens": tokens,
            "samples_per_s": limit / seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/out/gpu"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--completion", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--size", choices=["full", "mini"], default="full")
    parser.add_argument("--report", type=Path,
                        help="where to write the JSON report (default OUT/gpu_bench.json)")
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / f"qwen2vl-2b-{args.size}"
    t0 = time.perf_counter()
    n_params = build(model, FULL if args.size == "full" else MINI)
    result: dict[str, Any] = {"device": device, "size": args.size, "params": n_params,
                              "build_s": time.perf_counter() - t0, "versions": {
                                  "torch": torch.__version__, "transformers": _version("transformers"),
                                  "trl": _version("trl"), "peft": _version("peft")}}
    print(f"built {n_params / 1e9:.2f} B parameters in {result['build_s']:.0f} s on {device}", flush=True)
    result["grpo"], result["hf"], result["failed"] = [], [], []
    save = args.report or args.out / "gpu_bench.json"
    for label, preset, extra in RUNS:  # one failing part must not lose the others' figures
        try:
            result["grpo"].append(train(model, args.out / f"train-{label.split()[0]}", preset, args.steps,
                                        args.completion, gpu, label, extra))
        except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as exc:
            result["failed"].append(f"train {label}: {exc}")
        save.write_text(json.dumps(result, indent=2))
    for batch, limit in ((1, 8), (8, 32), (32, 64)):
        try:
            result["hf"].append(infer(model, args.out / f"run-b{batch}", batch, limit, args.new_tokens))
        except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as exc:
            result["failed"].append(f"hf batch {batch}: {exc}")
        save.write_text(json.dumps(result, indent=2))
    print(f"\n{device}, Qwen2-VL-2B architecture ({n_params / 1e9:.2f} B params, random weights), "
          f"torch {torch.__version__}\n")
    print(tabulate([[g["preset"], 8, args.completion, f"{g['step_time_s']:.2f}",
                     f"{g['completion_tokens_per_s']:.0f}",
                     "n/a" if g["peak_memory_gib"] is None else f"{g['peak_memory_gib']:.1f}"]
                    for g in result["grpo"]],
                   headers=["GRPO preset", "G", "completion tokens", "s/step", "completion tok/s/GPU",
                            "peak GiB"],
                   tablefmt="github"))
    print()
    print(tabulate([[h["batch"], h["samples"], f"{h['samples_per_s']:.2f}", f"{h['tokens_per_s']:.0f}"]
                    for h in result["hf"]], headers=["hf batch", "samples", "samples/s", "tokens/s"],
                   tablefmt="github"))
    for failure in result["failed"]:
        print(f"FAILED: {failure}")


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
