"""Throughput of the API backends against the local fake server (a script, not a test): prints a Markdown table.

Each request waits a fixed server latency (100 ms), so the ideal rate is `concurrency / latency`; the table
gives the achieved rate and its fraction of ideal (target >= 80 %). Every prompt carries one 64x64 image, so
PNG encoding and base64 are in the measured path. Loopback only.
Usage: python bench/api_throughput.py [--prompts 128] [--latency 0.1] [--concurrency 1 8 32] [--backends openai gemini]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_api_server import FakeAPIServer  # noqa: E402

from medharness.backends import BACKENDS, Request  # noqa: E402
from medharness.records import Message, Part, Prompt  # noqa: E402


def make_requests(n: int) -> list[Request]:
    out = []
    for i in range(n):
        image = Image.new("RGB", (64, 64), (i % 256, (7 * i) % 256, 128))
        prompt = Prompt(sample_id=str(i), messages=(Message(role="user", content=(
            Part(type="image", image=f"img{i}.png"), Part(type="text", text=f"Is there an effusion? #{i}"))),))
        out.append(Request(prompt=prompt, images=[image]))
    return out


def bench(name: str, concurrency: int, n: int, latency: float) -> list[object]:
    suffix = "/v1" if name == "openai" else ""
    requests = make_requests(n)
    with FakeAPIServer(latency=latency, max_requests=4 * n + 16, max_seconds=300) as server:
        model = BACKENDS.get(name)("bench-model", base_url=server.url + suffix, api_key_env="MEDHARNESS_BENCH_NO_KEY",
                                   concurrency=concurrency, timeout=30, max_retries=0)
        try:
            model.generate(requests[:min(n, concurrency)])  # warm-up: client, connections, imports
            server.reset()
            start = time.perf_counter()
            out = model.generate(requests)
            elapsed = time.perf_counter() - start
        finally:
            model.close()
        errors = sum(g.error is not None for g in out)
        assert [g.sample_id for g in out] == [r.prompt.sample_id for r in requests]
        ideal = concurrency / latency
        achieved = n / elapsed
        return [name, concurrency, n, f"{latency * 1000:.0f}", f"{elapsed:.2f}", f"{ideal:.1f}", f"{achieved:.1f}",
                f"{100 * achieved / ideal:.0f} %", server.max_in_flight, errors]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--backends", nargs="+", default=["openai", "gemini"])
    args = ap.parse_args()
    rows = []
    for name in args.backends:
        for c in args.concurrency:
            n = min(args.prompts, max(16, 8 * c))  # concurrency 1 at 100 ms: 16 prompts are enough
            rows.append(bench(name, c, n, args.latency))
    print(tabulate(rows, headers=["backend", "concurrency", "prompts", "latency ms", "wall s", "ideal req/s",
                                  "achieved req/s", "of ideal", "max in flight", "errors"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
