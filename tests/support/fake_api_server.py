"""A small fake of the OpenAI and Gemini HTTP APIs on 127.0.0.1, with scripted faults (a helper, not a test).

Speaks `POST /v1/chat/completions` (OpenAI shape) and `POST /v1beta/models/{model}:generateContent` (Gemini
shape). Every request is recorded (path, lower-cased headers, parsed body, start/end times) and the most
requests in flight at once is tracked, so tests can assert on images, key headers, counts and concurrency.

Faults are scripted per request: `server.script(fault, ..., match="text")` queues faults for requests whose
prompt text contains `match` ("" = any request); each request pops the first queue that matches, and a
request with no queued fault is answered normally. Fault kinds:

    Fault.http(429, retry_after="0.3")    an HTTP error (the error body echoes the key it received, like real
                                          APIs do, so tests can check that backends scrub it)
    Fault.timeout(2.0)                    sleep before answering (past the client's timeout)
    Fault.truncated()                     a 200 whose body stops halfway (Content-Length promises more)
    Fault.malformed()                     a 200 whose body is not JSON
    Fault.ok()                            a normal answer (to pad a script)

`latency` adds a fixed delay to every answer. Bounded: after `max_requests` requests the server answers 503
and stops; after `max_seconds` it stops itself whatever happens.
`python tests/support/fake_api_server.py --latency 0.1` serves from its own process (prints the URL; `GET
/_stats` gives counts, `POST /_reset` clears them), so a benchmark's client does not share the server's GIL.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from typing_extensions import Self

_GEMINI_PATH = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:]+):generateContent$")


@dataclass(frozen=True)
class Fault:
    kind: str  # ok | status | timeout | truncated | malformed
    status: int = 200
    retry_after: str | None = None
    delay: float = 0.0

    @staticmethod
    def ok() -> Fault:
        return Fault("ok")

    @staticmethod
    def http(code: int, retry_after: str | float | None = None) -> Fault:
        return Fault("status", status=code, retry_after=None if retry_after is None else str(retry_after))

    @staticmethod
    def timeout(seconds: float) -> Fault:
        return Fault("timeout", delay=seconds)

    @staticmethod
    def truncated() -> Fault:
        return Fault("truncated")

    @staticmethod
    def malformed() -> Fault:
        return Fault("malformed")


@dataclass
class Recorded:
    api: str  # "openai" | "gemini" | "other"
    path: str
    headers: dict[str, str]
    body: Any
    text: str  # the last user text of the prompt
    images: list[str]  # openai: the image_url urls; gemini: "mime;base64,DATA" of inline parts
    fault: Fault
    start: float
    end: float = 0.0


@dataclass
class _Queue:
    match: str
    faults: list[Fault] = field(default_factory=list)


class FakeAPIServer:
    """`with FakeAPIServer(latency=0.1) as srv: ... srv.url ...`; see the module docstring."""

    def __init__(self, latency: float = 0.0, max_requests: int = 2000, max_seconds: float = 120.0,
                 answer: Any = None, answer_by_model: Any = None) -> None:
        self.latency = latency
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.answer = answer or (lambda text: f"answer to: {text}")
        # (text, model) -> answer: one server plays several models (e.g. a panel of scripted judges)
        self.answer_by_model = answer_by_model
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._queues: list[_Queue] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Timer | None = None

    # ----------------------------------------------------------------------------------------- control
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *faults: Fault, match: str = "") -> FakeAPIServer:
        with self._lock:
            for q in self._queues:
                if q.match == match:
                    q.faults.extend(faults)
                    break
            else:
                self._queues.append(_Queue(match, list(faults)))
        return self

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._queues.clear()
            self.max_in_flight = 0

    def start(self) -> FakeAPIServer:
        server = self

        class Handler(_Handler):
            fake = server

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # listen backlog: the default 5 drops connections when 32 arrive at once

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-api-server", daemon=True)
        self._thread.start()
        self._watchdog = threading.Timer(self.max_seconds, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._httpd is not None:
            # shutdown() blocks until serve_forever returns: never call it from a handler thread
            threading.Thread(target=self._shutdown, daemon=True).start()

    def _shutdown(self) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ---------------------------------------------------------------------------------------- internals
    def _next_fault(self, text: str) -> Fault:
        with self._lock:
            for q in sorted(self._queues, key=lambda q: q.match == ""):  # specific matches first
                if q.faults and q.match in text:
                    return q.faults.pop(0)
        return Fault.ok()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAPIServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle/delayed-ACK stalls between header and body

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.fake
        if self.path == "/_stats":
            with fake._lock:
                stats = {"requests": len(fake.requests), "max_in_flight": fake.max_in_flight}
            return self._send(200, stats)
        return self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        fake = self.fake
        if self.path == "/_reset":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fake.reset()
            return self._send(200, {})
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = self.path.split("?", 1)[0]
        gemini = _GEMINI_PATH.match(path)
        if path.endswith("/chat/completions"):
            api, model = "openai", (body or {}).get("model", "") if isinstance(body, dict) else ""
            text, images = _openai_prompt(body)
        elif gemini:
            api, model = "gemini", gemini.group(2)
            text, images = _gemini_prompt(body)
        else:
            api, model, text, images = "other", "", "", []
        with fake._lock:
            over_budget = len(fake.requests) >= fake.max_requests
            fault = Fault.http(503) if over_budget else Fault.ok()
        if not over_budget:
            fault = fake._next_fault(text)
        rec = Recorded(api=api, path=self.path, headers=headers, body=body, text=text, images=images,
                       fault=fault, start=time.monotonic())
        with fake._lock:
            fake.requests.append(rec)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._respond(api, model, text, images, fault, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout fault)
        finally:
            with fake._lock:
                fake.in_flight -= 1
                rec.end = time.monotonic()
            if over_budget:
                fake.stop()

    def _respond(self, api: str, model: str, text: str, images: list[str], fault: Fault,
                 headers: dict[str, str]) -> None:
        fake = self.fake
        if api == "other":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        if fault.kind == "timeout":
            fake._sleep(fault.delay)
        elif fake.latency:
            fake._sleep(fake.latency)
        if fault.kind == "status":
            key = (headers.get("authorization", "").removeprefix("Bearer ")
                   or headers.get("x-goog-api-key", ""))
            message = f"scripted error {fault.status}; request made with key {key}"
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if api == "gemini":
                status = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE",
                          500: "INTERNAL"}.get(fault.status, "ERROR")
                return self._send(fault.status, {"error": {"code": fault.status, "message": message,
                                                           "status": status}}, extra)
            return self._send(fault.status, {"error": {"message": message, "type": "scripted", "code": None}},
                              extra)
        answer = fake.answer_by_model(text, model) if fake.answer_by_model else fake.answer(text)
        n_prompt, n_completion = 7 + 100 * len(images), len(answer.split())
        if api == "openai":
            payload: dict[str, Any] = {
                "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": 0,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                          "total_tokens": n_prompt + n_completion}}
        else:
            payload = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": answer}]},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": n_prompt, "candidatesTokenCount": n_completion,
                                  "totalTokenCount": n_prompt + n_completion},
                "modelVersion": model}
        blob = json.dumps(payload).encode()
        if fault.kind == "malformed":
            return self._send_raw(200, b"{'this is': not json,, " + blob[:20], "application/json")
        if fault.kind == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob[: len(blob) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        return self._send_raw(200, blob, "application/json")

    def _send(self, code: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        self._send_raw(code, json.dumps(payload).encode(), "application/json", extra)

    def _send_raw(self, code: int, blob: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(blob)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(blob)


def _openai_prompt(body: Any) -> tuple[str, list[str]]:
    text, images = "", []
    for msg in (body or {}).get("messages", []) if isinstance(body, dict) else []:
        content = msg.get("content")
        if isinstance(content, str):
            if msg.get("role") == "user":
                text = content
            continue
        texts = []
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                images.append(part["image_url"]["url"])
        if msg.get("role") == "user":
            text = " ".join(texts)
    return text, images


def _gemini_prompt(body: Any) -> tuple[str, list[str]]:
    text, images = "", []
    for content in (body or {}).get("contents", []) if isinstance(body, dict) else []:
        texts = []
        for part in content.get("parts", []):
            if "text" in part:
                texts.append(part["text"])
            inline = part.get("inlineData") or part.get("inline_data")
            if inline:
                images.append(f"{inline.get('mimeType') or inline.get('mime_type')};base64,{inline['data']}")
        if content.get("role", "user") == "user":
            text = " ".join(texts)
    return text, images


def main() -> None:
    """`python tests/support/fake_api_server.py --latency 0.1`: serve from this process (prints the URL,
    blocks)."""
    import argparse

    ap = argparse.ArgumentParser(description="fake OpenAI/Gemini API on 127.0.0.1 (no faults scripted)")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--max-requests", type=int, default=100_000)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args()
    server = FakeAPIServer(latency=args.latency, max_requests=args.max_requests, max_seconds=args.max_seconds)
    with server:
        print(server.url, flush=True)
        server._stop.wait()


if __name__ == "__main__":
    main()
