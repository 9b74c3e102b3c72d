"""Model backends. Light ones register on import; heavy ones lazily by "module:Class"."""

from medharness.backends.base import BACKENDS, Backend, Request, backend

BACKENDS.add_lazy("hf", "medharness.backends.hf:HFBackend")
BACKENDS.add_lazy("replay", "medharness.backends.replay:ReplayBackend")
BACKENDS.add_lazy("baseline", "medharness.backends.baseline:BaselineBackend")
BACKENDS.add_lazy("openai", "medharness.backends.openai_compat:OpenAIBackend")
BACKENDS.add_lazy("gemini", "medharness.backends.gemini:GeminiBackend")
BACKENDS.add_lazy("vllm", "medharness.backends.vllm:VLLMBackend")

__all__ = ["BACKENDS", "Backend", "Request", "backend"]
