"""The sweep the executor tests (`--executor slurm`, `ray`) share: SFT then GRPO from it, two seeds, the base
and majority rows; its cell ids in the order the sweep lists them."""

SWEEP = """\
name: chain
model: tiny
tasks: [phantom_presence]
seeds: [0, 1]
recipes:
  - sft
  - {recipe: grpo, from: sft}
common_presets: [tiny_cpu]
max_steps: 2
eval: {limit: 2, batch_size: 2}
baselines: [majority]
"""
SFT0, SFT1 = "sft-phantom_presence-kall-s0", "sft-phantom_presence-kall-s1"
GRPO0, GRPO1 = "grpo-from-sft-phantom_presence-kall-s0", "grpo-from-sft-phantom_presence-kall-s1"
ALL = ["reference-base", "reference-baseline-majority", SFT0, SFT1, GRPO0, GRPO1]
