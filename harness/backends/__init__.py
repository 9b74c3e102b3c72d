"""Model backends. Light ones register on import; heavy ones lazily by "module:Class".

`OPTIONS` lists the keyword options each built-in backend's constructor takes, so a misspelt or foreign option
(`--backend-option`, `--device` on an API backend, a judge's `options:`) is refused before any directory is
created or any model loaded, without importing torch. A test keeps it equal to the constructors' signatures.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from medharness.backends.base import BACKENDS, Backend, Request, backend
from medharness.core.errors import ConfigError

BACKENDS.add_lazy("hf", "medharness.backends.hf:HFBackend")
BACKENDS.add_lazy("replay", "medharness.backends.replay:ReplayBackend")
BACKENDS.add_lazy("baseline", "medharness.backends.baseline:BaselineBackend")
BACKENDS.add_lazy("openai", "medharness.backends.openai_compat:OpenAIBackend")
BACKENDS.add_lazy("gemini", "medharness.backends.gemini:GeminiBackend")
BACKENDS.add_lazy("vllm", "medharness.backends.vllm:VLLMBackend")

_API_OPTIONS = frozenset({"base_url", "api_key_env", "concurrency", "timeout", "max_retries", "image_format",
                          "retry_base_delay", "retry_max_delay", "max_retry_after"})
OPTIONS: dict[str, frozenset[str]] = {
    "hf": frozenset({"device", "dtype", "batch_size", "attn_implementation", "base", "merge_adapter"}),
    "vllm": frozenset({"dtype", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization",
                       "enforce_eager", "max_num_seqs", "max_images_per_prompt", "min_pixels", "max_pixels",
                       "lora", "batch_size", "trust_remote_code", "seed", "engine_args", "device",
                       "data_parallel_size", "base"}),
    "openai": _API_OPTIONS | {"max_tokens_param"},
    "gemini": _API_OPTIONS | {"thinking_budget"},
    "replay": frozenset({"id_field", "prediction_field"}),
    "baseline": frozenset({"seed"}),
}
_SECRETS = ("api_key", "key", "token")


def check_options(name: str, options: Iterable[str], what: str = "backend option") -> None:
    """ConfigError naming each option the backend `name` does not take (with a "did you mean"). A backend
    not in `OPTIONS` (a plugin) is not checked here: its constructor decides."""
    accepted = OPTIONS.get(name)
    if accepted is None:
        return
    unknown = sorted(set(options) - accepted)
    if not unknown:
        return
    notes = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if key in _SECRETS:
            hint = (" (the key itself is never an option: put it in an environment variable named by "
                    "api_key_env)")
        notes.append(f"'{key}'{hint}")
    raise ConfigError(f"the {name} backend does not take the {what}(s) {', '.join(notes)}; it takes: "
                      f"{', '.join(sorted(accepted))}")


__all__ = ["BACKENDS", "OPTIONS", "Backend", "Request", "backend", "check_options"]
