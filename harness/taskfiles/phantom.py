"""The `phantom` benchmark: synthetic grey-scale "scans" generated deterministically from a seed.

No files are shipped: a case is a pure function of `(seed, index, size)`, its image a pure function of
the case, and the truth comes from the generator, so a blank image changes the right answer.

A case is a mid-grey body ellipse with smooth texture on a dark background, holding 0-3 (uniform)
bright, round, non-overlapping lesions fully inside the body. Coordinates are continuous pixels:
pixel column `x` covers `[x, x + 1)`, so the image spans `[0, size]` on both axes.

Size grades (by the LARGEST lesion's radius `r` as a fraction of `size`):
  0 = no lesion; 1 = small, r < 0.044 * size; 2 = medium, r < 0.068 * size; 3 = large, otherwise.
Generated radii of the largest lesion avoid the thresholds: small 0.025-0.036, medium 0.050-0.060,
large 0.078-0.090 (times `size`); every other lesion is at most 0.75 times the largest, and the largest
lesion's centre is at least 0.05 * size from the vertical midline, so "largest" and "side" are unambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from medharness.core.records import Sample

KINDS = ("presence", "count", "side", "size", "box")
Kind = Literal["presence", "count", "side", "size", "box"]

GRADE_THRESHOLDS = (0.044, 0.068)  # r / size below which a lesion is small, medium; else large
_BANDS = ((0.025, 0.036), (0.050, 0.060), (0.078, 0.090))  # radius / size drawn for grades 1, 2, 3
_MIN_OTHER = 0.018  # smallest radius / size of a non-largest lesion
_GAP = 0.03  # least edge-to-edge distance between lesions, and lesion-to-body-edge margin, / size
_MIDLINE = 0.05  # least |cx - size/2| / size of the largest lesion
_BODY_GREY, _TEXTURE, _NOISE, _BACKGROUND = 120.0, 14.0, 3.0, 14.0
_REF = re.compile(r"phantom:(\d+)/(\d+)/(\d+)")

QUESTIONS: dict[str, str] = {
    "presence": "Is there a bright lesion in this scan?",
    "count": "How many bright lesions are visible?",
    "side": "On which side of the image is the largest lesion?",
    "size": "Grade the size of the largest lesion from 0 (no lesion) to 3 (large).",
    "box": "Give the bounding box of the largest lesion as [x1, y1, x2, y2] in pixels.",
}


@dataclass(frozen=True)
class Lesion:
    """A bright disc: centre and radius in pixels, grey level 0-255."""

    cx: float
    cy: float
    radius: float
    intensity: int


@dataclass(frozen=True)
class PhantomCase:
    """One generated scan. `body` is the ellipse (cx, cy, rx, ry); `lesions[0]` is the largest."""

    seed: int
    index: int
    size: int
    body: tuple[float, float, float, float]
    lesions: tuple[Lesion, ...]


def _in_body(body: tuple[float, float, float, float], x: float, y: float, r: float, margin: float) -> bool:
    """Whether the disc (x, y, r + margin) lies inside the body ellipse (checked on 64 rim points)."""
    cx, cy, rx, ry = body
    t = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
    px, py = x + (r + margin) * np.cos(t), y + (r + margin) * np.sin(t)
    return bool(np.all(((px - cx) / rx) ** 2 + ((py - cy) / ry) ** 2 <= 1.0))


def make_case(seed: int, index: int, size: int = 224) -> PhantomCase:
    """The case `index` of benchmark `seed`, drawn from `numpy.random.default_rng([seed, index])`."""
    if size < 32 or seed < 0 or index < 0:
        raise ValueError(f"phantom needs seed >= 0, index >= 0 and size >= 32; got {seed}/{index}/{size}")
    rng = np.random.default_rng([seed, index])
    s = float(size)
    body = (s / 2 + rng.uniform(-0.03, 0.03) * s, s / 2 + rng.uniform(-0.03, 0.03) * s,
            rng.uniform(0.36, 0.42) * s, rng.uniform(0.38, 0.45) * s)
    n = int(rng.integers(0, 4))
    if n == 0:
        return PhantomCase(seed, index, size, body, ())
    lo, hi = _BANDS[int(rng.integers(0, 3))]
    r_max = rng.uniform(lo, hi) * s
    radii = [r_max] + sorted((rng.uniform(_MIN_OTHER * s, 0.75 * r_max) for _ in range(n - 1)), reverse=True)
    gap = _GAP * s
    for _ in range(1000):  # rejection sampling; a few tries suffice in practice
        placed: list[tuple[float, float, float]] = []
        for i, r in enumerate(radii):
            for _ in range(200):
                x = rng.uniform(body[0] - body[2], body[0] + body[2])
                y = rng.uniform(body[1] - body[3], body[1] + body[3])
                if i == 0 and abs(x - s / 2) < _MIDLINE * s:
                    continue
                if not _in_body(body, x, y, r, gap):
                    continue
                if all(np.hypot(x - px, y - py) >= r + pr + gap for px, py, pr in placed):
                    placed.append((x, y, r))
                    break
            else:
                break
        if len(placed) == n:
            lesions = tuple(Lesion(round(x, 2), round(y, 2), round(r, 2), int(rng.integers(200, 246)))
                            for x, y, r in placed)
            return PhantomCase(seed, index, size, body, lesions)
    raise RuntimeError(f"cannot place {n} lesions in phantom {seed}/{index}/{size}")  # pragma: no cover


def _texture(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bilinearly to size x size."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells))
    at = (np.arange(size) + 0.5) * (cells - 1) / size
    i0 = np.clip(np.floor(at).astype(int), 0, cells - 2)
    f = at - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def render(case: PhantomCase) -> Image.Image:
    """The case as a size x size RGB image (grey, identical channels); same case -> identical bytes."""
    size = case.size
    rng = np.random.default_rng([case.seed, case.index, size, 7])
    coords = np.arange(size) + 0.5
    x, y = coords[None, :], coords[:, None]
    cx, cy, rx, ry = case.body
    inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
    body = _BODY_GREY + _TEXTURE * (0.7 * _texture(rng, size, 6) + 0.3 * _texture(rng, size, 14))
    img = np.where(inside, body, _BACKGROUND) + rng.uniform(-_NOISE, _NOISE, (size, size))
    for lesion in case.lesions:
        cover = np.clip(lesion.radius - np.hypot(x - lesion.cx, y - lesion.cy) + 0.5, 0.0, 1.0)
        img = img + (lesion.intensity - img) * cover  # anti-aliased disc edge
    grey = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")


def _largest(case: PhantomCase) -> Lesion | None:
    return max(case.lesions, key=lambda le: le.radius) if case.lesions else None


def size_grade(case: PhantomCase) -> int:
    """0 without lesions, else 1/2/3 by the largest radius / size against `GRADE_THRESHOLDS`."""
    big = _largest(case)
    if big is None:
        return 0
    frac = big.radius / case.size
    return 1 if frac < GRADE_THRESHOLDS[0] else 2 if frac < GRADE_THRESHOLDS[1] else 3


def side(case: PhantomCase) -> Literal["left", "right"] | None:
    """The IMAGE half (not the patient's side) holding the largest lesion's centre; None without lesions."""
    big = _largest(case)
    if big is None:
        return None
    return "left" if big.cx < case.size / 2 else "right"


def largest_box(case: PhantomCase) -> list[float] | None:
    """[x1, y1, x2, y2] absolute pixel box of the largest lesion, rounded to 0.1; None without lesions."""
    big = _largest(case)
    if big is None:
        return None
    s = float(case.size)
    return [round(min(max(v, 0.0), s), 1)
            for v in (big.cx - big.radius, big.cy - big.radius, big.cx + big.radius, big.cy + big.radius)]


def _truth(kind: str, case: PhantomCase) -> Any:
    n = len(case.lesions)
    return {"presence": lambda: "yes" if n else "no", "count": lambda: str(n), "side": lambda: side(case),
            "size": lambda: size_grade(case), "box": lambda: largest_box(case)}[kind]()


def make_samples(kind: str, *, seed: int, n: int, task: str, size: int = 224) -> list[Sample]:
    """`n` samples of question `kind`; side and box skip lesion-free cases (ids keep the case index)."""
    if kind not in KINDS:
        raise ValueError(f"unknown phantom question kind {kind!r}; expected one of {', '.join(KINDS)}")
    answer_type = "CLOSED" if kind in ("presence", "side") else "OPEN"
    samples: list[Sample] = []
    index = 0
    while len(samples) < n:
        case = make_case(seed, index, size)
        if case.lesions or kind not in ("side", "box"):
            samples.append(Sample(
                id=f"{kind}-{index:05d}", task=task, question=QUESTIONS[kind], target=_truth(kind, case),
                images=(f"phantom:{seed}/{index}/{size}",),
                choices=("left", "right") if kind == "side" else (),
                meta={"answer_type": answer_type, "n_lesions": len(case.lesions),
                      "image_size": [size, size], "kind": kind},
            ))
        index += 1
    return samples


def parse_ref(ref: str) -> tuple[int, int, int]:
    """(seed, index, size) of a "phantom:SEED/INDEX/SIZE" reference; ValueError naming it otherwise."""
    match = _REF.fullmatch(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise ValueError(f"malformed phantom image reference {ref!r}; expected 'phantom:SEED/INDEX/SIZE'")
    return int(match[1]), int(match[2]), int(match[3])


def open_image(ref: str) -> Image.Image:
    """The image a "phantom:SEED/INDEX/SIZE" reference names, regenerated."""
    seed, index, size = parse_ref(ref)
    try:
        return render(make_case(seed, index, size))
    except ValueError as exc:
        raise ValueError(f"bad phantom image reference {ref!r}: {exc}") from None


def blank_truth(kind: str) -> Any:
    """The right answer for a blank (black) image: no lesion; side and box are unanswerable (None)."""
    if kind not in KINDS:
        raise ValueError(f"unknown phantom question kind {kind!r}; expected one of {', '.join(KINDS)}")
    return {"presence": "no", "count": "0", "size": 0, "side": None, "box": None}[kind]
