"""`gemini`: Google's Gemini API through `google-genai` (the maintained successor of `google-generativeai`).

`--backend gemini --model gemini-2.5-flash [--base-url URL]`; options (see `api_common.ApiBackend`):
`base_url` (default https://generativelanguage.googleapis.com), `api_key_env` (default `GEMINI_API_KEY`, then
`GOOGLE_API_KEY`; a placeholder is sent when neither is set and base_url is not Google's), `concurrency` (8),
`timeout` (60 s per attempt), `max_retries` (5), `image_format` (png), `thinking_budget` (unset = the
model's default; 0 turns thinking off where the model allows it). Images go as inline parts; system messages
become the system instruction; `GenerateContentConfig(temperature, top_p, max_output_tokens, seed)`. The SDK's
retries are off (`api_common` retries, honouring Retry-After). completion_tokens = candidates + thoughts
tokens (what the model generated and is billed for). The fingerprint is `gemini:<model>@<base_url>`; the key
is never recorded.
"""

from __future__ import annotations

from typing import Any

from medharness.backends.api_common import PLACEHOLDER_KEY, ApiBackend, encode_image
from medharness.backends.base import Request, backend
from medharness.core.errors import BackendError, ConfigError
from medharness.core.records import Generation, Prompt

try:
    from google import genai
    from google.genai import types
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise BackendError("the gemini backend needs google-genai: pip install 'medharness[api]'") from exc

GEMINI_URL = "https://generativelanguage.googleapis.com"
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}


def gemini_contents(prompt: Prompt, images: list[Any],
                    image_format: str = "png") -> tuple[list[Any], str | None]:
    """medharness messages -> (Gemini contents, system instruction). Image parts take `images` in order."""
    n_parts = sum(1 for m in prompt.messages for p in m.content if p.type == "image")
    if n_parts != len(images):
        raise ValueError(f"the prompt has {n_parts} image part(s) but the request carries "
                         f"{len(images)} image(s)")
    pending = iter(images)
    system: list[str] = []
    contents: list[Any] = []
    for message in prompt.messages:
        if message.role == "system":
            if any(p.type == "image" for p in message.content):
                raise ValueError("gemini: images in a system message are not supported")
            system.append("".join(p.text or "" for p in message.content))
            continue
        parts = []
        for part in message.content:
            if part.type == "image":
                data, mime = encode_image(next(pending), image_format)
                parts.append(types.Part.from_bytes(data=data, mime_type=mime))
            else:
                parts.append(types.Part.from_text(text=part.text or ""))
        contents.append(types.Content(role="user" if message.role == "user" else "model", parts=parts))
    return contents, ("\n".join(system) if system else None)


@backend("gemini")
class GeminiBackend(ApiBackend):
    """`--backend gemini --model gemini-2.5-flash`; the key from $GEMINI_API_KEY or $GOOGLE_API_KEY."""

    default_key_envs = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    default_base_url = GEMINI_URL

    def __init__(self, model: str, thinking_budget: int | str | None = None, **options: Any) -> None:
        super().__init__(model.removeprefix("models/"), **options)
        try:
            budget = None if thinking_budget in (None, "") else int(thinking_budget or 0)
            self.thinking_budget = budget
        except (TypeError, ValueError):
            raise ConfigError(f"gemini backend: thinking_budget must be an integer, "
                              f"got {thinking_budget!r}") from None
        if self._api_key is None and (self.base_url or GEMINI_URL) == GEMINI_URL:
            raise ConfigError(f"gemini backend: no API key; set {' or '.join(self.api_key_envs)} "
                              f"(a key may be omitted only for a local --base-url)")

    def _make_client(self, api_key: str | None) -> Any:
        options = types.HttpOptions(
            base_url=self.base_url, timeout=max(1, round(self.policy.timeout * 1000)),
            # One attempt: api_common retries. Setting retry_options also stops the SDK's implicit retry of
            # aiohttp connection errors (a 1-10 s sleep outside any policy).
            retry_options=types.HttpRetryOptions(attempts=1))
        return genai.Client(api_key=api_key or PLACEHOLDER_KEY, vertexai=False, http_options=options)

    async def _close_client(self, client: Any) -> None:
        try:
            await client.aio.aclose()
        finally:
            client.close()

    def _prepare(self, request: Request) -> Any:
        settings = request.prompt.settings
        contents, system = gemini_contents(request.prompt, request.images, self.image_format)
        config = types.GenerateContentConfig(
            temperature=settings.temperature, top_p=settings.top_p, max_output_tokens=settings.max_new_tokens,
            seed=settings.seed, candidate_count=1, system_instruction=system,
            thinking_config=None if self.thinking_budget is None
            else types.ThinkingConfig(thinking_budget=self.thinking_budget))
        return contents, config

    async def _send(self, client: Any, request: Request, payload: Any) -> Generation:
        contents, config = payload
        response = await client.aio.models.generate_content(model=self.model, contents=contents,
                                                            config=config)
        usage = response.usage_metadata
        prompt_tokens = getattr(usage, "prompt_token_count", None)
        generated = [getattr(usage, "candidates_token_count", None),
                     getattr(usage, "thoughts_token_count", None)]
        completion_tokens = sum(n for n in generated if n) if any(n is not None for n in generated) else None
        sid = request.prompt.sample_id
        if not response.candidates:
            feedback = response.prompt_feedback
            reason = getattr(getattr(feedback, "block_reason", None), "value", None) or "no candidates"
            return Generation(sample_id=sid, text="", finish_reason="blocked", prompt_tokens=prompt_tokens,
                              model=self.fingerprint, error=f"gemini: the prompt was blocked ({reason})")
        candidate = response.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        finish = getattr(candidate.finish_reason, "value", candidate.finish_reason)
        return Generation(sample_id=sid, text=text,
                          finish_reason=_FINISH.get(finish, str(finish).lower()) if finish else None,
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          model=self.fingerprint,
                          model_version=getattr(response, "model_version", None) or None)
