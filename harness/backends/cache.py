"""The response cache shared by all model backends (SQLite, one file per user).

Key = the model fingerprint + the rendered messages with each image replaced by a hash of its pixels
(so an ablated image is a different prompt) + the generation settings. Greedy outputs are reused across
runs whatever the seed; sampled outputs only when the seed matches. Failed or empty generations are
never stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medharness.core.records import Generation, Prompt

if TYPE_CHECKING:
    from PIL.Image import Image


def default_cache_dir() -> Path:
    root = (os.environ.get("MEDHARNESS_CACHE")
            or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medharness")
    return Path(root)


def image_hash(image: Image) -> str:
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:24]


def cache_key(fingerprint: str, prompt: Prompt, images: Sequence[Image]) -> str:
    hashes = iter([image_hash(im) for im in images])
    messages = [
        {"role": m.role, "content": [{"image": next(hashes, "?")} if p.type == "image" else {"text": p.text}
                                     for p in m.content]}
        for m in prompt.messages
    ]
    settings = prompt.settings.model_dump()
    if prompt.settings.greedy:
        settings.pop("seed")
    blob = json.dumps({"model": fingerprint, "messages": messages, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """key -> Generation. Safe to share between concurrent runs (SQLite with a busy timeout). `name` picks the
    file: model responses in `responses.sqlite`, judges' replies in `verdicts.sqlite`."""

    def __init__(self, directory: Path | None = None, name: str = "responses") -> None:
        self.path = (directory or default_cache_dir()) / f"{name}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self._set_up()
        self.hits = self.misses = 0

    def _set_up(self, attempts: int = 200) -> None:
        """WAL mode and the table. Switching a fresh file to WAL takes an exclusive lock that SQLite does not
        wait for (no busy timeout), so connections opened at once (judges of one panel) retry it briefly."""
        for attempt in range(attempts):
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, "
                                "generation TEXT NOT NULL)")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    def get_many(self, keys: Sequence[str]) -> dict[str, Generation]:
        found: dict[str, Generation] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start: start + 500])
            marks = ",".join("?" * len(chunk))
            for key, blob in self.db.execute(f"SELECT key, generation FROM responses WHERE key IN ({marks})",
                                             chunk):
                found[key] = Generation.model_validate_json(blob)
        self.hits += len(found)
        self.misses += len(set(keys) - set(found))
        return found

    def put_many(self, items: Iterable[tuple[str, Generation]]) -> None:
        rows = [(k, g.model_dump_json()) for k, g in items if g.error is None and g.text.strip()]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO responses (key, generation) VALUES (?, ?)", rows)

    def close(self) -> None:
        self.db.close()

