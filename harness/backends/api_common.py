"""Shared pieces of the HTTP API backends (`openai`, `gemini`): image encoding, retries, bounded concurrency,
key scrubbing and the per-sample error after the last retry.

Retries are ours, not the SDKs' (both SDK retries are switched off): the `openai` SDK's backoff has only 25 %
jitter and `google-genai`'s (tenacity) ignores `Retry-After`; owning it gives both backends one policy
(exponential backoff with full jitter, `Retry-After`/`retry-after-ms` honoured on 429/503, a per-attempt
timeout), the same error texts, and a policy whose sleep and randomness tests can observe.

`ApiBackend.generate` is synchronous, as every backend's: it runs the batch on a private event loop in a
daemon thread (so it also works when the caller already runs an event loop), at most `concurrency` requests
in flight. A request that still fails after its last retry becomes `Generation(error=...)`; the run goes on.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import logging
import math
import os
import random
import threading
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from medharness.backends.base import Backend, Request
from medharness.core.errors import ConfigError
from medharness.core.records import Generation
from medharness.core.secrets import scrub

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)
T = TypeVar("T")

# Statuses worth another attempt; on RETRY_AFTER_STATUSES a server's Retry-After replaces our backoff.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
PLACEHOLDER_KEY = "sk-no-key"  # sent when no key is set (local servers: vLLM, llama.cpp, Ollama, ...)
_MAX_ERROR_CHARS = 600

# --------------------------------------------------------------------------------------------- images
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


def encode_image(image: Image, fmt: str = "png") -> tuple[bytes, str]:
    """An image as (bytes, mime type). Deterministic: same pixels -> same bytes (no metadata is written)."""
    fmt = fmt.lower()
    buf = io.BytesIO()
    if fmt == "png":
        img = image if image.mode in _PNG_MODES else image.convert("RGBA" if "A" in image.mode else "RGB")
        img.save(buf, format="PNG", compress_level=6)
        return buf.getvalue(), "image/png"
    if fmt in ("jpeg", "jpg"):
        img = image if image.mode in ("L", "RGB") else image.convert("RGB")
        img.save(buf, format="JPEG", quality=95, subsampling=0, optimize=False)
        return buf.getvalue(), "image/jpeg"
    raise ConfigError(f"image_format must be png or jpeg, got {fmt!r}")


def image_data_url(image: Image, fmt: str = "png") -> str:
    data, mime = encode_image(image, fmt)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --------------------------------------------------------------------------------------------- retries
@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` further attempts after the first; each attempt limited to `timeout` seconds."""

    max_retries: int = 5
    timeout: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0  # a longer Retry-After (a spent daily quota) is an error, not a wait

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**retry)]; `retry` counts from 0."""
        return rand() * min(self.max_delay, self.base_delay * 2.0 ** min(retry, 60))


@dataclass
class Failure:
    """One failed attempt, classified."""

    message: str
    retryable: bool
    status: int | None = None
    retry_after: float | None = None

    def describe(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if absent."""
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            date = email.utils.parsedate_tz(value)
            if date is None:
                return None
            seconds = email.utils.mktime_tz(date) - (time.time() if now is None else now)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except (TypeError, ValueError, OverflowError):
        return None


_TRANSPORT_NAMES = ("ConnectError", "ConnectTimeout", "ReadError", "WriteError", "RemoteProtocolError",
                    "LocalProtocolError", "ProtocolError", "NetworkError", "TransportError",
                    "APIConnectionError", "ServerDisconnectedError", "ClientConnectorError", "ClientOSError",
                    "ClientPayloadError", "IncompleteRead", "ConnectionError")
_TIMEOUT_NAMES = ("Timeout", "TimeoutError", "TimeoutException", "ReadTimeout", "PoolTimeout",
                  "APITimeoutError")
_DECODE_NAMES = ("JSONDecodeError", "DecodingError", "APIResponseValidationError", "UnknownApiResponseError",
                 "ValidationError")


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) and 100 <= value <= 599 else None


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        return {str(k).lower(): str(v) for k, v in dict(headers).items()}
    except (TypeError, ValueError):
        return None


def classify(exc: BaseException, timeout: float) -> Failure:
    """Any SDK's exception -> Failure, duck-typed: HTTP status + Retry-After, timeouts, broken connections
    and unreadable bodies (retryable), anything else (not retryable)."""
    names = _names(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    status = _status_of(exc)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or names & set(_TIMEOUT_NAMES):
        return Failure(f"timed out after {timeout:g} s", retryable=True)
    if status is not None and "APIResponseValidationError" not in names:
        retry_after = parse_retry_after(_headers_of(exc)) if status in RETRY_AFTER_STATUSES else None
        return Failure(text, retryable=status in RETRYABLE_STATUSES, status=status, retry_after=retry_after)
    if names & set(_TRANSPORT_NAMES) or isinstance(exc, ConnectionError):
        cause = exc.__cause__ or exc.__context__
        if cause is not None and str(cause) and str(cause) not in text:
            text += f" ({type(cause).__name__}: {' '.join(str(cause).split())})"
        return Failure(f"connection error ({type(exc).__name__}): {text}", retryable=True)
    if isinstance(exc, json.JSONDecodeError) or names & set(_DECODE_NAMES):
        return Failure(f"unreadable response ({type(exc).__name__}): {text}", retryable=True)
    return Failure(f"{type(exc).__name__}: {text}", retryable=False)


async def call_with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy,
                            classify_fn: Callable[[BaseException], Failure],
                            sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                            rand: Callable[[], float] = random.random,
                            on_retry: Callable[[Failure, int, float], None] | None = None) -> T | Failure:
    """Run `attempt` (each try limited to `policy.timeout`) until it succeeds, fails for good, or the retries
    run out. Returns the result, or the last Failure with the number of attempts in its message."""
    retry = 0
    while True:
        try:
            return await asyncio.wait_for(attempt(), timeout=policy.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below; a per-sample failure is data
            failure = classify_fn(exc)
        if not failure.retryable or retry >= policy.max_retries:
            tries = retry + 1
            if failure.retryable:
                failure.message += f" (gave up after {tries} attempt{'s' if tries > 1 else ''})"
            return failure
        if failure.retry_after is not None:
            if failure.retry_after > policy.max_retry_after:
                failure.message += (f" (Retry-After {failure.retry_after:g} s exceeds the "
                                    f"{policy.max_retry_after:g} s limit; not retried)")
                return failure
            delay = failure.retry_after + rand() * min(policy.base_delay, 0.1 * failure.retry_after + 0.01)
        else:
            delay = policy.backoff(retry, rand)
        if on_retry is not None:
            on_retry(failure, retry + 1, delay)
        await sleep(delay)
        retry += 1


# --------------------------------------------------------------------------------------------- event loop
class LoopThread:
    """A private asyncio loop in a daemon thread; `run(coro)` blocks the caller until the coroutine is done.
    One loop for the backend's lifetime, so SDK clients (and their connection pools) stay bound to it."""

    def __init__(self, name: str = "medharness-api") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure())
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller: stop the in-flight requests too
            raise

    def close(self, final: Coroutine[Any, Any, Any] | None = None) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            if final is not None:
                final.close()
            return
        if final is not None:
            try:
                asyncio.run_coroutine_threadsafe(final, loop).result(timeout=10)
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("closing the API client failed: %s", type(exc).__name__)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()


# --------------------------------------------------------------------------------------------- the base
def _as_int(name: str, value: Any, minimum: int) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if out < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {out}")
    return out


def _as_float(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not out > 0 or not math.isfinite(out):
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return out


class ApiBackend(Backend):
    """Common options of the HTTP API backends (all also settable on the CLI as strings):

    base_url      the endpoint (default: the provider's public one)
    api_key_env   environment variable(s) holding the key, comma-separated; the key itself is never an option
    concurrency   requests in flight at once (8)
    timeout       seconds per attempt (60)
    max_retries   further attempts after a retryable failure (5)
    image_format  png (default, lossless) or jpeg
    """

    default_key_envs: ClassVar[tuple[str, ...]] = ()
    default_base_url: ClassVar[str] = ""
    needs_images = True
    cacheable = True
    priced = True

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str | None = None,
                 concurrency: int | str = 8, timeout: float | str = 60.0, max_retries: int | str = 5,
                 image_format: str = "png", retry_base_delay: float | str = 0.5,
                 retry_max_delay: float | str = 30.0, max_retry_after: float | str = 120.0,
                 **options: Any) -> None:
        for secret_option in ("api_key", "key", "token"):
            if secret_option in options:
                raise ConfigError(f"{self.name} backend: do not pass the key as an option (it would be "
                                  "recorded); put it in an environment variable named by api_key_env")
        super().__init__(model, **options)
        if options:
            log.warning("%s backend ignores unknown options: %s", self.name, ", ".join(sorted(options)))
        self.base_url = (base_url or self.default_base_url or "").rstrip("/") or None
        envs = tuple(e.strip() for e in (api_key_env or "").split(",") if e.strip())
        self.api_key_envs = envs or self.default_key_envs
        self._api_key = next((os.environ[e] for e in self.api_key_envs if os.environ.get(e)), None)
        self.concurrency = _as_int("concurrency", concurrency, 1)
        self.image_format = image_format.lower()
        if self.image_format not in ("png", "jpeg", "jpg"):
            raise ConfigError(f"{self.name} backend: image_format must be png or jpeg, got {image_format!r}")
        self.policy = RetryPolicy(max_retries=_as_int("max_retries", max_retries, 0),
                                  timeout=_as_float("timeout", timeout),
                                  base_delay=_as_float("retry_base_delay", retry_base_delay),
                                  max_delay=_as_float("retry_max_delay", retry_max_delay),
                                  max_retry_after=_as_float("max_retry_after", max_retry_after))
        self._runner = LoopThread(f"medharness-{self.name}")
        self._client: Any = None
        self._sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep  # tests may observe the waits
        self._rand: Callable[[], float] = random.random

    # -- what subclasses provide
    @abstractmethod
    def _make_client(self, api_key: str | None) -> Any:
        """The SDK's async client (built inside the private loop), with the SDK's own retries off."""

    @abstractmethod
    def _prepare(self, request: Request) -> Any:
        """The request payload (messages with encoded images); runs in a worker thread, once per request."""

    @abstractmethod
    async def _send(self, client: Any, request: Request, payload: Any) -> Generation:
        """One attempt; raise on any failure (HTTP status, timeout, unreadable body)."""

    async def _close_client(self, client: Any) -> None:
        close = getattr(client, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result

    def _classify(self, exc: BaseException) -> Failure:
        return classify(exc, self.policy.timeout)

    # -- shared behaviour
    @property
    def batch_size_hint(self) -> int:
        return self.concurrency

    @property
    def fingerprint(self) -> str:
        return self.scrub(f"{self.name}:{self.model}@{self.base_url or self.default_base_url}")

    def scrub(self, text: str) -> str:
        return scrub(text, [self._api_key])

    def _error(self, request: Request, message: str) -> Generation:
        text = self.scrub(message)
        if len(text) > _MAX_ERROR_CHARS:
            text = text[: _MAX_ERROR_CHARS - 3] + "..."
        return Generation(sample_id=request.prompt.sample_id, text="", model=self.fingerprint,
                          error=f"{self.name}: {text}")

    async def _one(self, client: Any, request: Request, gate: asyncio.Semaphore) -> Generation:
        async with gate:
            try:
                payload = await asyncio.to_thread(self._prepare, request)
            except Exception as exc:  # noqa: BLE001 - a bad prompt/image fails only this sample
                return self._error(request, f"cannot build the request: {type(exc).__name__}: {exc}")

            def on_retry(failure: Failure, n: int, delay: float) -> None:
                log.info("%s: %s: %s; retry %d/%d in %.2f s", self.name, request.prompt.sample_id,
                         self.scrub(failure.describe())[:200], n, self.policy.max_retries, delay)

            result = await call_with_retries(lambda: self._send(client, request, payload), self.policy,
                                             self._classify, sleep=self._sleep, rand=self._rand,
                                             on_retry=on_retry)
        if isinstance(result, Failure):
            return self._error(request, result.describe())
        return result

    async def _batch(self, requests: Sequence[Request]) -> list[Generation]:
        if self._client is None:
            self._client = self._make_client(self._api_key)
        gate = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._one(self._client, r, gate) for r in requests)))

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        if not requests:
            return []
        return self._runner.run(self._batch(list(requests)))

    def close(self) -> None:
        client, self._client = self._client, None
        self._runner.close(self._close_client(client) if client is not None else None)


__all__ = [
    "PLACEHOLDER_KEY",
    "ApiBackend",
    "Failure",
    "LoopThread",
    "RetryPolicy",
    "call_with_retries",
    "classify",
    "encode_image",
    "image_data_url",
    "parse_retry_after",
    "scrub",
]
