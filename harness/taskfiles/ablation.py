"""Image ablations (`--ablate`): does the model use the picture? Its score should fall when the image is
replaced by a blank one, by noise, or by another sample's image.

Every replacement is deterministic from the run's seed and the sample id.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import numpy as np
from PIL import Image

from medharness.core.errors import ConfigError

ABLATIONS = ("blank", "noise", "shuffle")


def _seed(seed: int, sample_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()[:8], "little")


def blank(image: Image.Image) -> Image.Image:
    return Image.new(image.mode, image.size, 0)


def noise(image: Image.Image, seed: int, sample_id: str) -> Image.Image:
    rng = np.random.default_rng(_seed(seed, sample_id))
    pixels = rng.integers(0, 256, (image.height, image.width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(image.mode)


def partners(ids: Sequence[str], seed: int) -> dict[str, str]:
    """A seeded derangement: each sample gets another sample's image, none keeps its own."""
    if len(ids) < 2:
        raise ConfigError("--ablate shuffle needs at least two samples")
    order = list(ids)
    random.Random(seed).shuffle(order)
    return {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}


def check(mode: str | None) -> None:
    if mode is not None and mode not in ABLATIONS:
        raise ConfigError(f"unknown ablation '{mode}'; use one of {', '.join(ABLATIONS)}")
