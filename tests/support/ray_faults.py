"""Backends for the Ray replica tests (a helper module, not a test file): a replica process that dies once.

Ray workers import this module by name (the tests put tests/support on their PYTHONPATH), so it imports
nothing heavy: `dies_once` wraps a real backend (`inner`, e.g. hf) only when built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from medharness.backends import BACKENDS, Backend, Request, backend
from medharness.core.records import Generation


def die_once(marker: str) -> None:
    """The first process to create `marker` writes its pid there and dies at once (as a killed or
    out-of-memory replica would: no exception, no cleanup); every later call, in any process, goes on."""
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


@backend("echo_dies_once")
class EchoDiesOnce(Backend):
    """No model: answers "echo <last words of the prompt>"; `fail` marks sample ids ending in it as failed
    (a per-sample error); `marker`: die once on the first batch (see `die_once`)."""

    needs_images = False

    def __init__(self, model: str, marker: str = "", batch_size: int = 4, fail: str = "",
                 **options: Any) -> None:
        super().__init__(model, **options)
        self.marker, self.batch_size, self.fail = marker, int(batch_size), str(fail)

    @property
    def fingerprint(self) -> str:
        return f"echo:{self.model}"

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        die_once(self.marker)
        out = []
        for r in requests:
            sid = r.prompt.sample_id
            parts = r.prompt.messages[-1].content
            words = next((p.text or "" for p in reversed(parts) if p.type == "text"), "")
            text = " ".join(words.split()[-3:])
            failed = bool(self.fail) and sid.endswith(self.fail)
            out.append(Generation(sample_id=sid, text="" if failed else f"echo {text} ({len(requests)})",
                                  model=self.fingerprint, error="refused" if failed else None))
        return out


@backend("dies_once")
class DiesOnce(Backend):
    """The backend `inner` (default hf) of `model`, whose process dies once on its first batch (`marker`)."""

    def __init__(self, model: str, inner: str = "hf", marker: str = "", **options: Any) -> None:
        super().__init__(model)
        self.inner = BACKENDS.get(inner)(model, **options)
        self.marker = marker
        self.batch_size = int(getattr(self.inner, "batch_size", 1))
        self.attn_implementation = getattr(self.inner, "attn_implementation", None)

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        die_once(self.marker)
        return self.inner.generate(requests)

    def close(self) -> None:
        self.inner.close()
