"""Throughput of the API backends against the local fake server (a script, not a test): a Markdown table.

Each request waits a fixed server latency (100 ms), so the ideal rate is `concurrency / latency`; the table
gives the achieved rate and its fraction of ideal (target >= 80 %). Every prompt carries one 64x64 image, so
PNG encoding and base64 are in the measured path. The fake server runs in its own process (so that it does not
share the client's GIL); "client CPU" is this process's CPU time per request (SDK, JSON, encoding). The
`raw-httpx` rows post the same OpenAI requests with a bare `httpx2.AsyncClient` (no SDK, no retries, no
medharness): the ceiling of Python's HTTP stack on this machine, to read the backends' rows against.
Loopback only. Usage:
    python bench/api_throughput.py [--prompts 128] [--latency 0.1] [--concurrency 1 8 32]
                                   [--backends openai gemini raw-httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image
from tabulate import tabulate

from medharness.backends import BACKENDS, Request
from medharness.core.records import Message, Part, Prompt

SERVER = Path(__file__).resolve().parents[1] / "tests" / "support" / "fake_api_server.py"


def make_requests(n: int) -> list[Request]:
    out = []
    for i in range(n):
        image = Image.new("RGB", (64, 64), (i % 256, (7 * i) % 256, 128))
        parts = (Part(type="image", image=f"img{i}.png"),
                 Part(type="text", text=f"Is there an effusion? #{i}"))
        prompt = Prompt(sample_id=str(i), messages=(Message(role="user", content=parts),))
        out.append(Request(prompt=prompt, images=[image]))
    return out


def _call(url: str, method: str = "GET") -> dict:
    req = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def bench(url: str, name: str, concurrency: int, n: int, latency: float) -> list[object]:
    requests = make_requests(n)
    model = BACKENDS.get(name)("bench-model", base_url=url + ("/v1" if name == "openai" else ""),
                               api_key_env="MEDHARNESS_BENCH_NO_KEY", concurrency=concurrency, timeout=30,
                               max_retries=0)
    try:
        model.generate(requests[: min(n, concurrency)])  # warm-up: client, connections, imports
        _call(url + "/_reset", "POST")
        cpu, start = time.process_time(), time.perf_counter()
        out = model.generate(requests)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        model.close()
    stats = _call(url + "/_stats")
    assert [g.sample_id for g in out] == [r.prompt.sample_id for r in requests]
    ideal, achieved = concurrency / latency, n / elapsed
    return [name, concurrency, n, f"{latency * 1000:.0f}", f"{elapsed:.2f}", f"{ideal:.1f}",
            f"{achieved:.1f}", f"{100 * achieved / ideal:.0f} %", f"{1000 * cpu / n:.1f}",
            stats["max_in_flight"], sum(g.error is not None for g in out)]


def bench_raw(url: str, concurrency: int, n: int, latency: float) -> list[object]:
    """The same requests through a bare httpx2 client: the HTTP stack's own ceiling."""
    import httpx2

    from medharness.backends.openai_compat import openai_messages

    requests = make_requests(n)

    async def run() -> float:
        gate = asyncio.Semaphore(concurrency)
        async with httpx2.AsyncClient(timeout=30) as client:
            async def one(req: Request) -> None:
                async with gate:
                    body = {"model": "bench-model", "messages": openai_messages(req.prompt, req.images),
                            "temperature": 0, "seed": 0, "max_tokens": 128}
                    response = await client.post(url + "/v1/chat/completions", json=body)
                    response.raise_for_status()
                    response.json()

            await asyncio.gather(*(one(r) for r in requests[:concurrency]))  # warm-up
            _call(url + "/_reset", "POST")
            start = time.perf_counter()
            await asyncio.gather(*(one(r) for r in requests))
            return time.perf_counter() - start

    cpu = time.process_time()
    elapsed = asyncio.run(run())
    cpu = time.process_time() - cpu  # includes the warm-up: an upper bound
    stats = _call(url + "/_stats")
    ideal, achieved = concurrency / latency, n / elapsed
    return ["raw-httpx", concurrency, n, f"{latency * 1000:.0f}", f"{elapsed:.2f}", f"{ideal:.1f}",
            f"{achieved:.1f}", f"{100 * achieved / ideal:.0f} %", f"{1000 * cpu / n:.1f}",
            stats["max_in_flight"], 0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--backends", nargs="+", default=["openai", "gemini", "raw-httpx"],
                    help="raw-httpx: a bare httpx2 client, the reference")
    args = ap.parse_args()
    server = subprocess.Popen([sys.executable, str(SERVER), "--latency", str(args.latency),
                               "--max-seconds", "900"], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"the fake server did not start (got {url!r})")
        rows = []
        for name in args.backends:
            for c in args.concurrency:
                n = min(args.prompts, max(16, 8 * c))  # concurrency 1 at 100 ms: 16 prompts are enough
                if name == "raw-httpx":
                    rows.append(bench_raw(url, c, n, args.latency))
                else:
                    rows.append(bench(url, name, c, n, args.latency))
    finally:
        server.terminate()
        server.wait(timeout=10)
    headers = ["backend", "concurrency", "prompts", "latency ms", "wall s", "ideal req/s", "achieved req/s",
               "of ideal", "client CPU ms/req", "max in flight", "errors"]
    print(tabulate(rows, headers=headers, tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
