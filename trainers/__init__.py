"""Trainers: TRL recipes (sft, dpo, grpo; LoRA an option, Dr.GRPO a preset) whose rewards are the tasks' own
parsers and metrics. `medharness.trainers.base` holds the `@trainer` registry; see docs/training.md."""
