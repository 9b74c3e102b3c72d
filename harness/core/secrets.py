"""Secrets never recorded: an API key, a bearer token or the credentials in a URL (`http://user:KEY@host`) are
replaced by `***` wherever medharness records text it was given (run.json's config and command, a judge's
`base_url`, a backend's fingerprint, error messages, logs). The key itself is only ever read from the
environment variable a backend names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|x-goog-api-key|key)\s*[=:]\s*['\"]?)[A-Za-z0-9._~+/-]{8,}"),
    re.compile(r"\b(sk-(?:proj-)?)[A-Za-z0-9_-]{12,}"),
    re.compile(r"\b(AIza)[A-Za-z0-9_-]{20,}"),
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s@]+(?=@)"),  # a URL's user:password@ or token@
)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without the given secrets (nor anything shaped like a bearer token, an API key or URL
    credentials)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


def scrub_value(value: Any) -> Any:
    """`scrub` on every string of a JSON-like value (dict keys stay as they are)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v) for v in value]
    return value
