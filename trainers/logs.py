"""`OUTPUT/logs.jsonl`: one line per logging step with TRL's own metrics (loss,
`rewards/<component>/mean|std`, `reward`, `kl`, `clip_ratio/*`, `frac_reward_zero_std`,
`completions/mean_length`, ...) plus what TRL does not log everywhere: `step_time` (seconds per optimiser
step), `tokens_per_s` and, on a GPU, `peak_memory_gib` (the most memory PyTorch allocated on this process's
GPU so far). A progress function (the CLI's print) gets a short line per logging step, whether or not stdout
is a terminal.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medharness.trainers.rewards import TOTAL

# Short names for the progress line, in order: (TRL key, label).
PROGRESS_KEYS = (("loss", "loss"), ("reward", "reward"), ("kl", "kl"), ("frac_reward_zero_std", "zero_std"),
                 ("completions/mean_length", "len"), ("rewards/accuracies", "acc"),
                 ("mean_token_accuracy", "tok_acc"))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _peak_memory_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def progress_line(row: dict[str, Any], max_steps: int) -> str:
    parts = [f"step {row['step']}/{max_steps}"]
    for key, label in PROGRESS_KEYS:
        if isinstance(row.get(key), (int, float)):
            parts.append(f"{label} {row[key]:.4g}")
    for key in ("step_time", "tokens_per_s"):
        if isinstance(row.get(key), (int, float)):
            parts.append(f"{key} {row[key]:.3g}")
    return "  ".join(parts)


def log_callback(path: Path, progress: Callable[[str], None] | None = None) -> Any:
    """A TrainerCallback appending each log row to `path` (and printing a progress line)."""
    from transformers import TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        def __init__(self) -> None:
            self.step_started = time.perf_counter()
            self.step_times: list[float] = []
            self.last_tokens: float | None = None
            self.last_time = time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.step_started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.step_times.append(time.perf_counter() - self.step_started)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            now = time.perf_counter()
            row: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch,
                                   "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            row.update({k: _clean(v) for k, v in logs.items()})
            if self.step_times and "step_time" not in row:
                row["step_time"] = sum(self.step_times) / len(self.step_times)
            tokens = logs.get("num_tokens", state.num_input_tokens_seen or None)
            if isinstance(tokens, (int, float)) and tokens:
                if self.last_tokens is not None and now > self.last_time:
                    row["tokens_per_s"] = (tokens - self.last_tokens) / (now - self.last_time)
                elif self.step_times:
                    row["tokens_per_s"] = tokens / max(sum(self.step_times), 1e-9)
                self.last_tokens = tokens
            self.last_time, self.step_times = now, []
            # the combined reward function (trainers/rewards.TOTAL) is TRL's `reward`, not a component
            components = {k.split("/")[1]: {"mean": row.get(k), "std": row.get(k[:-5] + "/std")}
                          for k in row if k.startswith("rewards/") and k.endswith("/mean")
                          and k != f"rewards/{TOTAL}/mean"}
            if components:
                row["reward_components"] = components
            peak = _peak_memory_gib()
            if peak is not None:
                row["peak_memory_gib"] = peak
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, default=str) + "\n")
            if progress is not None and "train_runtime" not in logs:
                progress(progress_line(row, state.max_steps))

    return JsonlLogCallback()
