"""Trainers: one training run on TRL (`medharness train`) and the train-then-eval sweeps over it.

    schema.py      the recipe config's schema (TrainConfig, RewardSpec, LoraSpec)
    config.py      loading it: presets, --config, flags and -C layers, TRL's own config object
    recipes/       the training recipes, one file per registered name (`@trainer`, recipes/base.py)
    rewards.py     rewards that ARE the task's metrics;  data.py: samples to TRL datasets
    prepare.py     model, processor, dataset and trainer for a run;  run.py: the run and its train.json
    checkpoints.py what a training run saves;  logs.py: its logs.jsonl;  evals.py: --eval-every
    launch.py      accelerate / torchrun;  merge.py: LoRA merge;  cli.py: `train`, `reward`
    sweeps/        `train-then-eval`: sweep files (*.yaml), their schema, stages, checks and boards
    presets/       the shipped presets (*.yaml, one per name)

See docs/training.md."""

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    """The shipped presets' names (a glob: no import, for `--help`)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
