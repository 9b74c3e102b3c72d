"""Trainers: TRL recipes (sft, dpo, grpo, vrft_aug, rarl; LoRA an option, Dr.GRPO a preset) whose rewards are the
tasks' own parsers and metrics. `medharness.trainers.base` holds the `@trainer` registry; see docs/training.md."""

# The built-in recipes register themselves on import (they import trl only inside `build`); they import
# `.base`, never this package, so there is no cycle.
from medharness.trainers import dpo, grpo, rarl, sft, vrft  # noqa: F401
