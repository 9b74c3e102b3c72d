"""The `openai` and `gemini` backends against a real local HTTP server (tests/support/fake_api_server.py,
127.0.0.1).

Every test talks to a fake server that stops itself after 60 s; retries use short delays so the file runs in
well under a minute.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import time

import pytest

pytest.importorskip("openai")
pytest.importorskip("google.genai")

from fake_api_server import FakeAPIServer, Fault
from PIL import Image

from medharness.backends import BACKENDS, Request
from medharness.backends.api_common import (
    Failure,
    RetryPolicy,
    call_with_retries,
    encode_image,
    parse_retry_after,
    scrub,
)
from medharness.core.errors import ConfigError
from medharness.core.records import GenerationSettings, Message, Part, Prompt

KEY = "sk-test-SECRET-0123456789abcdef"
KEY_ENV = "MEDHARNESS_TEST_API_KEY"
BACKEND_NAMES = ["openai", "gemini"]
FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}


def image(seed: int, size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), (seed % 256, (3 * seed) % 256, 200))


def request(i: int, n_images: int = 1, system: str | None = None, settings: GenerationSettings | None = None
            ) -> Request:
    parts = tuple(Part(type="image", image=f"img{i}_{k}.png") for k in range(n_images))
    messages = ((Message(role="system", content=(Part(type="text", text=system),)),) if system else ()) + (
        Message(role="user", content=(*parts, Part(type="text", text=f"question {i}?"))),)
    prompt = Prompt(sample_id=f"s{i}", messages=messages, settings=settings or GenerationSettings())
    return Request(prompt=prompt, images=[image(10 * i + k) for k in range(n_images)])


@pytest.fixture
def server():
    with FakeAPIServer(max_requests=400, max_seconds=60) as srv:
        yield srv


@pytest.fixture
def make(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    made = []

    def _make(name: str, srv: FakeAPIServer, **options):
        options.setdefault("api_key_env", KEY_ENV)
        base_url = srv.url + ("/v1" if name == "openai" else "")
        backend = BACKENDS.get(name)("test-model", base_url=base_url, **options)
        made.append(backend)
        return backend

    yield _make
    for backend in made:
        backend.close()


def sent_images(rec) -> list[bytes]:
    """The image bytes the server received, from a data URL (openai) or an inline part (gemini)."""
    out = []
    for url in rec.images:
        head, data = url.split("base64,", 1)
        assert "image/png" in head
        # google-genai sends urlsafe base64; the OpenAI data URLs use the standard alphabet
        out.append(base64.urlsafe_b64decode(data.replace("+", "-").replace("/", "_")))
    return out


# --------------------------------------------------------------------------------------------- happy path
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_batch_answers_in_order_with_tokens_images_and_key(name, server, make):
    backend = make(name, server)
    settings = GenerationSettings(max_new_tokens=32, temperature=0.0, seed=7)
    requests = [request(0, n_images=1, system="Be brief.", settings=settings), request(1, n_images=2),
                request(2, n_images=0)]
    out = backend.generate(requests)

    assert [g.sample_id for g in out] == ["s0", "s1", "s2"]
    assert [g.text for g in out] == [f"answer to: question {i}?" for i in range(3)]
    assert all(g.error is None and g.finish_reason == "stop" for g in out)
    assert [g.prompt_tokens for g in out] == [107, 207, 7]  # the fake counts 7 + 100 per image
    assert [g.completion_tokens for g in out] == [4, 4, 4]
    assert all(g.model == backend.fingerprint for g in out)

    by_text = {r.text: r for r in server.requests}
    assert len(server.requests) == 3
    for req in requests:  # every image arrived, in order, as the exact PNG bytes
        rec = by_text[f"question {req.prompt.sample_id[1:]}?"]
        assert sent_images(rec) == [encode_image(im)[0] for im in req.images]
    rec0 = by_text["question 0?"]
    if name == "openai":
        assert rec0.headers["authorization"] == f"Bearer {KEY}"
        body = rec0.body
        assert body["model"] == "test-model" and body["temperature"] == 0 and body["seed"] == 7
        assert body["max_tokens"] == 32
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert all(u.startswith("data:image/png;base64,") for u in rec0.images)
        assert rec0.path == "/v1/chat/completions"
    else:
        assert rec0.headers["x-goog-api-key"] == KEY
        config = rec0.body["generationConfig"]
        assert config["temperature"] == 0 and config["seed"] == 7 and config["maxOutputTokens"] == 32
        assert rec0.body["systemInstruction"]["parts"][0]["text"] == "Be brief."
        assert rec0.path.endswith("/models/test-model:generateContent")
    assert backend.fingerprint == f"{name}:test-model@{backend.base_url}"
    assert KEY not in backend.fingerprint and KEY not in repr(backend.options)


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_no_key_sends_a_placeholder_to_a_local_server(name, server, make, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    backend = make(name, server, api_key_env=None)
    [gen] = backend.generate([request(0)])
    assert gen.error is None
    header = "authorization" if name == "openai" else "x-goog-api-key"
    assert server.requests[0].headers[header].endswith("sk-no-key")


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_key_problems_are_config_errors(name, monkeypatch):
    for env in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigError, match="no API key"):
        BACKENDS.get(name)("m")  # the public endpoint without a key: fail before the run starts
    with pytest.raises(ConfigError, match="api_key_env"):
        BACKENDS.get(name)("m", base_url="http://127.0.0.1:9", api_key=KEY)  # would land in run.json


# --------------------------------------------------------------------------------------------- faults
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_429_retry_after_is_honoured_then_succeeds(name, server, make):
    backend = make(name, server, max_retries=3, **FAST)
    server.script(Fault.http(429, retry_after="0.4"), match="question 1?")
    out = backend.generate([request(0), request(1), request(2)])
    assert all(g.error is None for g in out), [g.error for g in out]
    tries = sorted((r for r in server.requests if r.text == "question 1?"), key=lambda r: r.start)
    assert [r.fault.kind for r in tries] == ["status", "ok"]
    waited = tries[1].start - tries[0].end
    assert 0.4 <= waited < 0.7, waited  # Retry-After, not the 10 ms backoff, plus at most a small jitter


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_retry_after_beyond_the_limit_is_an_error_without_waiting(name, server, make):
    backend = make(name, server, max_retries=3, max_retry_after=5, **FAST)
    server.script(Fault.http(503, retry_after="3600"))
    start = time.monotonic()
    [gen] = backend.generate([request(0)])
    assert time.monotonic() - start < 2
    assert "HTTP 503" in gen.error and "Retry-After 3600" in gen.error
    assert len(server.requests) == 1


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_500s_until_the_retries_run_out_give_a_per_sample_error(name, server, make):
    backend = make(name, server, max_retries=2, **FAST)
    server.script(*[Fault.http(500)] * 3, match="question 1?")
    out = backend.generate([request(0), request(1), request(2)])
    assert out[0].error is None and out[2].error is None
    err = out[1].error
    assert err.startswith(f"{name}: HTTP 500") and "gave up after 3 attempts" in err
    assert "scripted error 500" in err  # the server's message is kept ...
    assert KEY not in err and "***" in err  # ... but the key it echoed is not
    assert out[1].text == "" and out[1].model == backend.fingerprint
    assert sum(r.text == "question 1?" for r in server.requests) == 3


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_client_errors_are_not_retried(name, server, make):
    backend = make(name, server, max_retries=3, **FAST)
    server.script(Fault.http(400))
    [gen] = backend.generate([request(0)])
    assert "HTTP 400" in gen.error and KEY not in gen.error
    assert len(server.requests) == 1


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_timeout_becomes_an_error(name, server, make):
    backend = make(name, server, timeout=0.5, max_retries=1, **FAST)
    server.script(Fault.timeout(5), Fault.timeout(5))
    start = time.monotonic()
    [gen] = backend.generate([request(0)])
    assert time.monotonic() - start < 2.5
    assert "timed out after 0.5 s" in gen.error and "2 attempts" in gen.error


@pytest.mark.parametrize("name", BACKEND_NAMES)
@pytest.mark.parametrize("fault", ["malformed", "truncated"])
def test_unreadable_responses_become_errors(name, fault, server, make):
    backend = make(name, server, max_retries=0, **FAST)
    server.script(getattr(Fault, fault)())
    [gen] = backend.generate([request(0)])
    assert gen.error is not None and gen.text == ""
    assert ("unreadable response" if fault == "malformed" else "connection error") in gen.error


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_a_malformed_then_good_response_is_retried(name, server, make):
    backend = make(name, server, max_retries=2, **FAST)
    server.script(Fault.malformed(), Fault.truncated())
    [gen] = backend.generate([request(0)])
    assert gen.error is None and gen.text == "answer to: question 0?"
    assert len(server.requests) == 3


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_an_image_count_mismatch_fails_only_that_sample(name, server, make):
    backend = make(name, server)
    bad = request(1, n_images=2)
    bad = Request(prompt=bad.prompt, images=bad.images[:1])
    out = backend.generate([request(0), bad])
    assert out[0].error is None
    assert "2 image part(s)" in out[1].error
    assert len(server.requests) == 1


# --------------------------------------------------------------------------------------------- concurrency
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_concurrency_is_bounded_and_used(name, make):
    with FakeAPIServer(latency=0.1, max_requests=100, max_seconds=30) as srv:
        backend = make(name, srv, concurrency=8)
        backend.generate([request(99, n_images=0)])  # warm-up: client, imports
        srv.reset()
        requests = [request(i) for i in range(16)]
        out = backend.generate(requests)
        assert [g.text for g in out] == [f"answer to: question {i}?" for i in range(16)]
        assert srv.max_in_flight == 8  # never more than 8 in flight, and 8 were (no wall-clock assertion)


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_concurrency_one_is_serial(name, make):
    with FakeAPIServer(latency=0.02, max_requests=20, max_seconds=30) as srv:
        backend = make(name, srv, concurrency=1)
        backend.generate([request(i) for i in range(4)])
        assert srv.max_in_flight == 1 and len(srv.requests) == 4


def test_generate_works_inside_a_running_event_loop(server, make):
    backend = make("openai", server)

    async def caller():
        return backend.generate([request(0)])

    [gen] = asyncio.run(caller())
    assert gen.error is None


# --------------------------------------------------------------------------------------------- secrets
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_the_key_is_in_no_log_line(name, server, make, caplog):
    caplog.set_level(logging.DEBUG)
    backend = make(name, server, max_retries=1, **FAST)
    server.script(Fault.http(500), Fault.http(401), match="question 0?")
    server.script(Fault.http(429, retry_after="0"), match="question 1?")
    out = backend.generate([request(0), request(1)])
    assert out[1].error is None and "HTTP 401" in out[0].error
    assert caplog.records  # the SDKs and the retry loop did log
    assert KEY not in caplog.text
    assert all(KEY not in (g.error or "") for g in out)


def test_scrub():
    assert scrub(f"bad key {KEY} here", [KEY]) == "bad key *** here"
    assert "AIzaSyA" not in scrub("url?key=AIzaSyA1234567890abcdefghijkl&x=1")
    assert scrub("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer ***"
    assert scrub("HTTP 500: internal error") == "HTTP 500: internal error"
    assert scrub("https://user:pa55word@host:8000/v1") == "https://***@host:8000/v1"
    assert (scrub("see http://token123@host/x and mailto me@x.org")
            == "see http://***@host/x and mailto me@x.org")


# --------------------------------------------------------------------------------------------- the policy
def test_backoff_is_exponential_with_full_jitter():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert [policy.backoff(k, rand=lambda: 1.0) for k in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.backoff(3, rand=lambda: 0.0) == 0.0


def test_parse_retry_after():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_call_with_retries_sleeps_the_policy_and_stops():
    sleeps: list[float] = []
    calls = 0

    async def attempt():
        nonlocal calls
        calls += 1
        raise ConnectionError("reset")

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    policy = RetryPolicy(max_retries=3, base_delay=1.0, max_delay=10.0, timeout=1.0)
    result = asyncio.run(call_with_retries(attempt, policy, lambda e: Failure(str(e), retryable=True),
                                           sleep=sleep, rand=lambda: 0.5))
    assert isinstance(result, Failure) and "gave up after 4 attempts" in result.message
    assert calls == 4 and sleeps == [0.5, 1.0, 2.0]


def test_png_encoding_is_deterministic_and_jpeg_is_available():
    img = image(3, size=32)
    assert encode_image(img)[0] == encode_image(img.copy())[0]
    data, mime = encode_image(img, "jpeg")
    assert mime == "image/jpeg" and data[:2] == b"\xff\xd8"
    assert encode_image(Image.new("CMYK", (4, 4)))[1] == "image/png"


def test_backends_register_lazily():
    assert {"openai", "gemini"} <= set(BACKENDS.names())
    assert BACKENDS.get("openai").__name__ == "OpenAIBackend"
    assert BACKENDS.get("gemini").__name__ == "GeminiBackend"


def test_a_full_run_against_a_local_openai_server_keeps_the_key_out_and_caches(tmp_path, monkeypatch):
    """The pipeline end to end with --backend openai: scores, no key in run.json, a repeat makes no
    request."""
    from medharness.cli import main

    monkeypatch.setenv("MY_TEST_KEY", "sk-test-SECRET-0123456789abcdef")
    with FakeAPIServer() as srv:
        def run(out):
            return main(["run", "--model", "fake-model", "--backend", "openai", "--base-url", f"{srv.url}/v1",
                         "--api-key-env", "MY_TEST_KEY", "--tasks", "phantom_presence", "--limit", "12",
                         "--concurrency", "4", "--output", str(out), "--no-progress",
                         "--cache-dir", str(tmp_path / "cache")])

        assert run(tmp_path / "a") == 0
        first = len(srv.requests)
        assert first == 12
        assert run(tmp_path / "b") == 0
        assert len(srv.requests) == first  # served from the response cache
    for name in ("a", "b"):
        text = "".join(p.read_text() for p in (tmp_path / name).rglob("*") if p.is_file())
        assert "SECRET" not in text
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["model"].startswith("openai:fake-model@http://127.0.0.1")
    assert info["tasks"]["phantom_presence"]["summary"]["n"] == 12
    assert info["tasks"]["phantom_presence"]["tokens"]["prompt"] > 0


def test_credentials_in_a_base_url_are_never_recorded(tmp_path, monkeypatch):
    """`--base-url http://user:KEY@host`: the run works, and no file it writes (run.json's config and command,
    rows, the fingerprint, the cache) holds the key."""
    from medharness.cli import main

    monkeypatch.setattr(sys, "argv", ["medharness", "run", "--base-url", "http://me:SECRET-pass-1@x"])
    with FakeAPIServer() as srv:
        url = srv.url.replace("http://", "http://me:SECRET-pass-1@") + "/v1"
        assert main(["run", "--model", "fake-model", "--backend", "openai", "--base-url", url, "--tasks",
                     "phantom_presence", "--limit", "4", "--output", str(tmp_path / "a"), "--no-progress",
                     "--cache-dir", str(tmp_path / "cache")]) == 0
        assert len(srv.requests) == 4
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in written) and any("cache" in p.parts for p in written)
    assert not [p for p in written if b"SECRET" in p.read_bytes()]
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["config"]["backend_options"]["base_url"].startswith("http://***@127.0.0.1")
    assert info["command"][-1] == "http://***@x" and info["model"].startswith("openai:fake-model@http://***@")


def test_resume_with_retry_errors_generates_only_the_failed_samples_again(tmp_path):
    """API errors after the last retry are recorded rows; `--resume --retry-errors` asks again for exactly
    those."""
    from medharness.cli import main
    from medharness.runs.runlog import RunDir

    out = tmp_path / "run"
    with FakeAPIServer() as srv:
        def run(*extra):
            return main(["run", "--model", "fake-model", "--backend", "openai", "--base-url", f"{srv.url}/v1",
                         "--tasks", "phantom_presence", "--limit", "10", "--concurrency", "1",
                         "--max-retries", "0", "--output", str(out), "--no-progress", "--no-cache", *extra])

        srv.script(Fault.ok(), Fault.http(500), Fault.ok(), Fault.http(500), Fault.http(500))
        assert run() == 0
        failed = {r.sample_id for r in RunDir.open(out).rows("phantom_presence") if r.generation.error}
        assert len(failed) == 3 and len(srv.requests) == 10
        assert run("--resume") == 0 and len(srv.requests) == 10  # plain resume: nothing missing
        assert run("--resume", "--retry-errors") == 0
        assert len(srv.requests) == 13  # the three failed samples, and only those
    rows = RunDir.open(out).rows("phantom_presence")
    assert len(rows) == 10 and not any(r.generation.error for r in rows)
    assert main(["run", "--model", "x", "--backend", "openai", "--tasks", "phantom_presence", "--output",
                 str(tmp_path / "new"), "--retry-errors"]) == 2  # needs --resume
