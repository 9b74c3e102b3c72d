"""`openai`: any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, SGLang, llama.cpp, Ollama, ...).

`--backend openai --model MODEL_ID [--base-url URL]`; options (see `api_common.ApiBackend`): `base_url`
(default `$OPENAI_BASE_URL`, else https://api.openai.com/v1), `api_key_env` (default `OPENAI_API_KEY`; with
no key a placeholder is sent, for local servers), `concurrency` (8), `timeout` (60 s per attempt),
`max_retries` (5), `image_format` (png), `max_tokens_param` ("max_tokens"; newer OpenAI models want
"max_completion_tokens"). Images go as `image_url` data URLs, in the order of `Request.images`; temperature 0
is greedy; the prompt's seed is passed. Uses the official `openai` SDK (AsyncOpenAI) with its retries off:
`api_common` retries. The fingerprint is `openai:<model>@<base_url>`; the key is never recorded.
"""

from __future__ import annotations

import os
from typing import Any

from medharness.backends.api_common import PLACEHOLDER_KEY, ApiBackend, image_data_url
from medharness.backends.base import Request, backend
from medharness.core.errors import BackendError, ConfigError
from medharness.core.records import Generation, Prompt

try:
    import openai
    from openai.types.chat import ChatCompletion
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise BackendError("the openai backend needs the openai package: pip install 'medharness[api]'") from exc

OPENAI_URL = "https://api.openai.com/v1"


def openai_messages(prompt: Prompt, images: list[Any], image_format: str = "png") -> list[dict[str, Any]]:
    """medharness messages -> OpenAI chat messages. Image parts take `images` in order (data URLs); system and
    assistant messages with text only are sent as plain strings (what every compatible server accepts)."""
    n_parts = sum(1 for m in prompt.messages for p in m.content if p.type == "image")
    if n_parts != len(images):
        raise ValueError(f"the prompt has {n_parts} image part(s) but the request carries "
                         f"{len(images)} image(s)")
    pending = iter(images)
    out: list[dict[str, Any]] = []
    for message in prompt.messages:
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if part.type == "image":
                url = image_data_url(next(pending), image_format)
                parts.append({"type": "image_url", "image_url": {"url": url}})
            else:
                parts.append({"type": "text", "text": part.text or ""})
        if message.role != "user" and all(p["type"] == "text" for p in parts):
            out.append({"role": message.role, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": message.role, "content": parts})
    return out


@backend("openai")
class OpenAIBackend(ApiBackend):
    """`--backend openai --model gpt-4o [--base-url http://localhost:8000/v1]`."""

    default_key_envs = ("OPENAI_API_KEY",)
    default_base_url = OPENAI_URL

    def __init__(self, model: str, base_url: str | None = None, max_tokens_param: str = "max_tokens",
                 **options: Any) -> None:
        super().__init__(model, base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None, **options)
        if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError("openai backend: max_tokens_param must be max_tokens or max_completion_tokens, "
                              f"got {max_tokens_param!r}")
        self.max_tokens_param = max_tokens_param
        if self._api_key is None and (self.base_url or OPENAI_URL) == OPENAI_URL:
            raise ConfigError(f"openai backend: no API key; set {' or '.join(self.api_key_envs)} "
                              f"(a key may be omitted only for a local --base-url)")

    def _make_client(self, api_key: str | None) -> Any:
        return openai.AsyncOpenAI(api_key=api_key or PLACEHOLDER_KEY, base_url=self.base_url, max_retries=0,
                                  timeout=self.policy.timeout)

    def _prepare(self, request: Request) -> Any:
        settings = request.prompt.settings
        messages = openai_messages(request.prompt, request.images, self.image_format)
        params: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "temperature": settings.temperature, "seed": settings.seed,
                                  self.max_tokens_param: settings.max_new_tokens}
        if not settings.greedy and settings.top_p != 1.0:
            params["top_p"] = settings.top_p
        return params

    async def _send(self, client: Any, request: Request, payload: Any) -> Generation:
        # `client.post` is the SDK's documented call for a raw endpoint: the same request as
        # `chat.completions.create`, minus its recursive TypedDict transform of the params, which walks every
        # message part (base64 images included) and was half of the client's CPU per request.
        response = await client.post("/chat/completions", body=payload, cast_to=ChatCompletion)
        if not response.choices:
            raise ValueError("the response has no choices")
        choice = response.choices[0]
        usage = response.usage
        return Generation(sample_id=request.prompt.sample_id, text=choice.message.content or "",
                          finish_reason=choice.finish_reason,
                          prompt_tokens=getattr(usage, "prompt_tokens", None),
                          completion_tokens=getattr(usage, "completion_tokens", None),
                          model=self.fingerprint, model_version=response.model or None)
