"""Bounding boxes: coordinate conventions, extraction from text, validity and IoU.

Conventions (`coords`): "absolute" = pixels of the original image; "norm1000" = 0-1000 of the
image on each axis (Qwen2-VL); "resized" = pixels of the model's resized input (Qwen2.5-VL).
`to_absolute` / `from_absolute` convert both ways so task prompts and parsers round-trip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from medharness.core.errors import ConfigError

COORDS = ("absolute", "norm1000", "resized")


def _scale(coords: str, image_size: Sequence[float] | None,
           resized_size: Sequence[float] | None) -> tuple[float, float]:
    """(sx, sy) such that absolute = declared * (sx, sy)."""
    if coords == "absolute":
        return 1.0, 1.0
    if coords not in COORDS:
        raise ConfigError(f"unknown box coords {coords!r}; use one of {', '.join(COORDS)}")
    if not image_size or len(image_size) != 2:
        raise ConfigError(f"coords {coords!r} needs image_size = [width, height]")
    width, height = float(image_size[0]), float(image_size[1])
    if coords == "norm1000":
        return width / 1000.0, height / 1000.0
    if not resized_size or len(resized_size) != 2:
        raise ConfigError("coords 'resized' needs resized_size = [width, height] (the model's input size)")
    return width / float(resized_size[0]), height / float(resized_size[1])


def to_absolute(box: Sequence[float], coords: str, image_size: Sequence[float] | None = None,
                resized_size: Sequence[float] | None = None) -> list[float]:
    """[x1, y1, x2, y2] in the declared `coords` -> absolute pixels of the original image.

    absolute: unchanged; norm1000: 0-1000 of the image (Qwen2-VL); resized: pixels of the model's
    resized input (Qwen2.5-VL), `resized_size = [w, h]`. `image_size = [width, height]`."""
    sx, sy = _scale(coords, image_size, resized_size)
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1 * sx, y1 * sy, x2 * sx, y2 * sy]


def from_absolute(box: Sequence[float], coords: str, image_size: Sequence[float] | None = None,
                  resized_size: Sequence[float] | None = None) -> list[float]:
    """Inverse of `to_absolute`: absolute pixels -> the declared `coords` (floats, unrounded)."""
    sx, sy = _scale(coords, image_size, resized_size)
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1 / sx, y1 / sy, x2 / sx, y2 / sy]


_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")


def find_boxes(text: str) -> list[list[float]]:
    """Every JSON list of exactly 4 numbers in the text, in order (``` fences and keys are ignored)."""
    return [[float(g) for g in m.groups()] for m in _BOX.finditer(text)]


def box_problem(box: Sequence[float]) -> str:
    """Why a box is unusable ("" if fine): non-finite, or x2 < x1 / y2 < y1."""
    if not all(math.isfinite(v) for v in box):
        return "non-finite coordinate"
    if box[2] < box[0] or box[3] < box[1]:
        return "reversed coordinates (x2 < x1 or y2 < y1)"
    return ""


def as_box(value: Any) -> list[float] | None:
    """[x1, y1, x2, y2] as finite floats with x1 <= x2 and y1 <= y2, or None."""
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < box[0] or box[3] < box[1]:
        return None
    return box


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two absolute boxes, continuous coordinates (no +1 pixel).

    Two zero-area boxes have IoU 0."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
