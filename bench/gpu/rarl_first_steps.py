"""The `rarl` recipe's first GRPO steps on the full-size Qwen2-VL-2B architecture with LoRA (random weights,
no download): seconds per step, completion tokens/s and peak GPU memory. A script for a GPU machine; CI runs
it with `--tiny` on a CPU (tests/bench/test_rarl_first_steps.py), never the full size.

1. builds Qwen2-VL-2B-Instruct's architecture with random weights (bench/gpu/qwen2vl_2b.py's `build`: 28
   layers, hidden 1536, vision tower 32 x 1280; about 2.2 B parameters), or with `--tiny` medharness's tiny
   Qwen2-VL;
2. builds the reward models the same way: a cross-encoder of cross-encoder/stsb-roberta-base's shape
   (RoBERTa-base, 12 x 768) for the reasoning reward and a BERT-large-shaped encoder (24 x 1024, layer 17) for
   BERTScore, both random, so the rewards cost what they cost with the real models (their values are noise);
3. writes a reasoning_vqa folder from phantom scans (closed yes/no and open "how many" questions, reasoning
   text from each scan's truth), so every reward component runs: format, length, binary and BERTScore
   accuracy, reasoning;
4. runs `medharness train --recipe rarl` (the `rarl` preset: LoRA r 8 / alpha 16 on q,k,v,o, vision frozen and
   asserted frozen, G = 4, batch 4 completions x 4 accumulation) for `--steps` steps with a fixed completion
   length (`min_new_tokens` = `max_completion_length`, so EOS is ignored), and reads step time, completion
   tokens/s and the peak memory from the trainer's logs.jsonl.

Usage: python bench/gpu/rarl_first_steps.py [--out DIR] [--steps 4] [--completion 256] [--tiny]
Prints a Markdown table (with the device's name) and writes DIR/rarl_first_steps.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen2vl_2b import CLI, FULL, _version, build

# reward-model shapes: (hidden, layers, heads, intermediate)
CROSS = {"full": (768, 12, 12, 3072), "tiny": (32, 2, 2, 64)}  # cross-encoder/stsb-roberta-base
# a large encoder, compared at layer 17
BERTSCORE = {"full": (1024, 24, 16, 4096, 17), "tiny": (32, 3, 2, 64, 2)}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "scan", "shows", "bright", "lesion",
         "lesions", "inside", "body", "outline", "yes", "no", "one", "two", "three", "zero", "left", "right"]


def build_reward_models(out: Path, size: str) -> dict[str, str]:
    """Random-weight reward models of the real ones' shapes, with offline tokenizers."""
    from medharness.core.torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizerFast,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    from medharness.checkpoints.tiny import build_tokenizer

    torch.manual_seed(0)
    hidden, layers, heads, inter = CROSS[size]
    tok = build_tokenizer()
    cross = out / "cross-encoder"
    RobertaForSequenceClassification(RobertaConfig(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, num_labels=1, max_position_embeddings=514,
        pad_token_id=1)).save_pretrained(cross)
    tok.save_pretrained(cross)
    hidden, layers, heads, inter, _ = BERTSCORE[size]
    encoder = out / "bertscore-encoder"
    BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)},
                      model_max_length=512).save_pretrained(encoder)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=inter,
                         max_position_embeddings=512)).save_pretrained(encoder)
    return {"cross": str(cross), "bertscore": str(encoder)}


def reasoning_folder(out: Path, n: int = 32) -> Path:
    """reasoning_vqa's layout from phantom scans: yes/no (closed) and lesion counts (open), with reasoning."""
    from medharness.taskfiles.task import load_task

    task = load_task("phantom_presence")
    (out / "images").mkdir(parents=True, exist_ok=True)
    words = ["zero", "one", "two", "three"]
    records = []
    for i, sample in enumerate(task.load_samples("train")[:n]):
        image = f"{sample.id}.png"
        task.open_image(sample.images[0]).save(out / "images" / image)
        count = int(sample.meta["n_lesions"])
        reasoning = f"The scan shows {words[count]} bright lesions inside the body outline."
        if i % 2:
            records.append({"id": sample.id, "image": image,
                            "question": "How many bright lesions does the scan show?",
                            "answer": f"{words[count]} lesions", "answer_type": "OPEN",
                            "reasoning": reasoning})
        else:
            records.append({"id": sample.id, "image": image, "question": sample.question,
                            "answer": sample.target, "answer_type": "CLOSED", "reasoning": reasoning})
    for split in ("train", "test"):
        (out / f"{split}.json").write_text(json.dumps(records))
    return out


def train(model: Path, data: Path, rewards: dict[str, str], out: Path, steps: int, completion: int, gpu: bool,
          size: str) -> dict[str, Any]:
    """GRPO steps of the rarl recipe through the real `medharness train`; figures from its logs.jsonl."""
    settings = [f"trl.max_steps={steps}", "trl.logging_steps=1", f"trl.save_steps={steps * 10}",
                f"trl.max_completion_length={completion}",
                f"trl.generation_kwargs={{min_new_tokens: {completion}}}",
                f"options.similarity_model={rewards['cross']}",
                f"options.bertscore_model={rewards['bertscore']}",
                f"options.bertscore_layers={BERTSCORE[size][4]}", f"data_dir={data}"]
    if not gpu:
        settings += ["trl.bf16=false", "trl.activation_checkpointing=false"]
    cmd = [*CLI, "train", "--recipe", "rarl", "--model", str(model), "--output", str(out),
           *[x for s in settings for x in ("-C", s)]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    info = json.loads((out / "train.json").read_text())
    logs = [json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines() if line.strip()]
    steps_logged = [r for r in logs if "step_time" in r]
    timed = steps_logged[1:] or steps_logged  # the first step includes warm-up (kernels, allocator)
    step_time = sum(r["step_time"] for r in timed) / len(timed)
    batch = info["batch"]
    completion_tokens = batch["completions_per_step"] * completion
    peaks = [r["peak_memory_gib"] for r in logs if r.get("peak_memory_gib") is not None]
    return {"steps": len(steps_logged), "step_time_s": step_time,
            "completions_per_step": batch["completions_per_step"],
            "completion_tokens_per_step": completion_tokens,
            "completion_tokens_per_s": completion_tokens / step_time,
            "logged_tokens_per_s": sum(r.get("tokens_per_s", 0.0) for r in timed) / len(timed),
            "peak_memory_gib": max(peaks) if peaks else None,
            "trainable_tensors": info.get("trainable_tensors"),
            "rewards": [r["label"] for r in info["rewards"]], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/out/rarl"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--completion", type=int, default=256)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny models on a CPU: a dry run of the whole script")
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu"
    size = "tiny" if args.tiny else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.tiny:
        from medharness.checkpoints.tiny import build_tiny_vlm

        model = build_tiny_vlm(args.out / "qwen2vl-tiny", arch="qwen2_vl")
        n_params = None
    else:
        model = args.out / "qwen2vl-2b-full"
        n_params = build(model, FULL)
    rewards = build_reward_models(args.out / "reward-models", size)
    data = reasoning_folder(args.out / "reasoning_vqa")
    result: dict[str, Any] = {"device": device, "size": size, "params": n_params,
                              "build_s": time.perf_counter() - t0, "completion": args.completion,
                              "versions": {
                                  "torch": torch.__version__, "transformers": _version("transformers"),
                                  "trl": _version("trl"), "peft": _version("peft")}}
    result["rarl"] = train(model, data, rewards, args.out / "train-rarl", args.steps,
                           args.completion, gpu, size)
    (args.out / "rarl_first_steps.json").write_text(json.dumps(result, indent=2))
    r = result["rarl"]
    params = f"{n_params / 1e9:.2f} B params" if n_params else "tiny"
    print(f"\n{device}, rarl (GRPO + LoRA) on the Qwen2-VL-2B architecture ({params}, random weights), "
          f"torch {torch.__version__}\n")
    print(tabulate([[r["steps"], r["completions_per_step"], args.completion, f"{r['step_time_s']:.2f}",
                     f"{r['completion_tokens_per_s']:.0f}",
                     "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"]],
                   headers=["steps", "completions/step", "completion tokens", "s/step", "completion tok/s",
                            "peak GiB"], tablefmt="github"))


if __name__ == "__main__":
    main()
