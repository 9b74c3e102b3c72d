"""Training recipes: each file registers one recipe under its own name with `@trainer` (base.py). The
built-in ones are imported here so that the registry is complete once any recipe module is imported; they
import trl only inside `build`, so listing them stays fast."""

from medharness.trainers.recipes import dpo, grpo, rarl, sft, vrft_aug  # noqa: F401
