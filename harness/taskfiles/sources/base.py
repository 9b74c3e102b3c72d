"""What every source shares: the task's side of loading (`LoadParams`), the column mapping, rows -> `Sample`s,
image opening under a data root, and the image sizes box samples carry.

A source never sees the task: `Task` passes it a `LoadParams` (the task's name, default columns and filter)
and, for local sources, the data root (`bind`). This module imports no other source module.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr

from medharness.core.errors import DataError
from medharness.core.records import Sample, Strict

if TYPE_CHECKING:
    from PIL.Image import Image


class Columns(Strict):
    """Dataset column -> Sample field. `meta` copies extra columns for grouping and metrics."""

    id: str | None = Field(None, description="the sample id column; null: the row index")
    question: str = Field("question", description="the question column")
    target: str = Field("answer", description="the gold answer column")
    image: str | None = Field(None, description="the image column")
    choices: list[str] | str | None = Field(
        None, description="several option columns, or one column holding a list")
    meta: dict[str, str] = Field(default_factory=dict, description="meta field -> column")
    derive_answer_type: bool = Field(
        False, description="true for copies without an answer_type column: CLOSED iff the gold is yes/no")
    strip_choice_letters: bool = Field(
        False, description="options stored as \"A: text\" / \"(B) text\": keep only the text")
    box: list[str] | None = Field(default=None, min_length=4, max_length=4,
                                  description="x1, y1, x2, y2 columns: the target")


@dataclass(frozen=True)
class LoadParams:
    """What a source needs from its task: the name every `Sample` carries (and errors cite), the default
    column mapping (a source's own `columns` win), and the equality filter on row columns / meta fields."""

    task: str
    columns: Columns = field(default_factory=Columns)
    filter: Mapping[str, Any] = field(default_factory=dict)

    def keep(self, fields: Mapping[str, Any]) -> bool:
        """The task's equality `filter`, applied to a raw row or a sample's meta fields."""
        return all(str(fields.get(k)) == str(v) for k, v in self.filter.items())


# --- rows -> samples ---------------------------------------------------------------------------

_OPTION_LETTER = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])\s*[:.)])\s*")

ImageRef = Callable[[dict[str, Any], int], str | None]  # (row, index) -> an image reference


def _strip_letter(option: str, position: int) -> str:
    """'B: Focal' at position 1 -> 'Focal'; only the letter of the option's own position is removed."""
    match = _OPTION_LETTER.match(option)
    if match and (match.group(1) or match.group(2)) == chr(65 + position):
        return option[match.end():].strip()
    return option.strip()


def rows_to_samples(rows: list[dict[str, Any]], params: LoadParams, columns: Columns, image_ref: ImageRef,
                    question: str | None = None, where: Sequence[str] | None = None) -> list[Sample]:
    """Apply the task's filter and the column mapping; `image_ref(row, index)` gives an image reference.

    `question`: a fixed question for every row (files without a question column). `where`: each row's place
    (`file:line`) for errors; default `row N`. A row missing a mapped column, with a null (or short-row
    missing) field, or a blank id, gold or image name, is a DataError naming the task, the row and the column:
    never the text "None"."""
    out = []
    for index, row in enumerate(rows):
        if not params.keep(row):
            continue
        at = f"task {params.task}: {where[index] if where is not None else f'row {index}'}"
        try:
            out.append(_sample(row, index, params.task, columns, image_ref, question, at))
        except KeyError as exc:
            raise DataError(f"{at}: no column {exc}; columns: {sorted(map(str, row))}") from None
    return out


def cell(row: dict[str, Any], column: str, at: str, blank_ok: bool = False) -> Any:
    """`row[column]`, refused when null (JSON null, a missing cell) or, unless `blank_ok`, blank text."""
    return _present(row[column], f"column '{column}'", at, blank_ok)


def _present(value: Any, what: str, at: str, blank_ok: bool = False) -> Any:
    if value is None or (not blank_ok and isinstance(value, str) and not value.strip()):
        raise DataError(f"{at}: {what} is empty ({json.dumps(value)}); a sample needs it")
    return value


def _text(value: Any, what: str, at: str, blank_ok: bool = False) -> str:
    """A value that becomes text (id, question, option, image name): a string or a number, nothing else."""
    value = _present(value, what, at, blank_ok)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{at}: {what} holds {type(value).__name__} {json.dumps(value, default=str)[:40]}, "
                        "not text")
    return str(value)


def text_cell(row: dict[str, Any], column: str, at: str, blank_ok: bool = False) -> str:
    return _text(row[column], f"column '{column}'", at, blank_ok)


def _sample(row: dict[str, Any], index: int, task: str, columns: Columns, image_ref: ImageRef,
            question: str | None, at: str) -> Sample:
    if columns.box:
        target: Any = [number(cell(row, c, at), f"{at} column {c}") for c in columns.box]
        if target[2] < target[0] or target[3] < target[1]:
            raise DataError(f"{at}: reversed box {target} (x2 < x1 or y2 < y1); check the `box` column order")
    else:
        target = cell(row, columns.target, at)
    if not isinstance(target, (list, int, float)):
        target = str(target).strip()
    meta = {key: row[col] for key, col in columns.meta.items()}
    if columns.derive_answer_type and "answer_type" not in meta:
        meta["answer_type"] = "CLOSED" if str(target).strip().lower() in ("yes", "no") else "OPEN"
        meta["answer_type_derived"] = True
    if isinstance(columns.choices, str):
        options = cell(row, columns.choices, at)
        if not isinstance(options, (list, tuple)):
            raise DataError(f"{at}: column '{columns.choices}' holds {type(options).__name__}, not a list "
                            "of options")
        choices = tuple(_text(o, f"option {i + 1} of column '{columns.choices}'", at, True)
                        for i, o in enumerate(options))
    else:
        choices = tuple(text_cell(row, c, at, True) for c in columns.choices or ())
    if columns.strip_choice_letters:
        choices = tuple(_strip_letter(c, i) for i, c in enumerate(choices))
    if columns.image:
        text_cell(row, columns.image, at)
    ref = image_ref(row, index)
    return Sample(
        id=text_cell(row, columns.id, at) if columns.id else str(index),
        task=task,
        question=question if question is not None else text_cell(row, columns.question, at, True),
        target=target,
        images=(ref,) if ref else (),
        choices=choices,
        meta=meta,
    )


def number(value: Any, what: str) -> int | float:
    """A coordinate from text: int when integral (keeps JSON readable), else float; finite only."""
    try:
        x = float(str(value).strip())
    except ValueError:
        raise DataError(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise DataError(f"{what}: {value!r} is not finite")
    return int(x) if x.is_integer() else x


# --- images ------------------------------------------------------------------------------------

MAX_IMAGE_PIXELS = 16384 * 16384
"""The most pixels (width x height) an image may claim in its header: above it the image is refused before its
pixels are decoded (a "decompression bomb": a few hundred bytes that claim 65000 x 65000 would need ~12 GB).
268 megapixels is far above any benchmark image (a mammogram is ~12 MP); set MEDHARNESS_MAX_IMAGE_PIXELS
to change it (docs/safety.md)."""


def max_image_pixels() -> int:
    """The pixel limit in force: MEDHARNESS_MAX_IMAGE_PIXELS when set (a positive integer), else the default.
    It is also given to Pillow (`Image.MAX_IMAGE_PIXELS`), so Pillow's own check agrees with ours."""
    raw = os.environ.get("MEDHARNESS_MAX_IMAGE_PIXELS", "").strip()
    try:
        limit = int(raw) if raw else MAX_IMAGE_PIXELS
    except ValueError:
        raise DataError(f"MEDHARNESS_MAX_IMAGE_PIXELS={raw!r} is not an integer") from None
    if limit < 1:
        raise DataError(f"MEDHARNESS_MAX_IMAGE_PIXELS={raw!r} must be positive")
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = limit
    return limit


def _check_size(size: tuple[int, int], what: str) -> None:
    width, height = size
    if width * height > max_image_pixels():
        raise _over_limit(what, f"{width} x {height}", width * height)


def _over_limit(what: str, claim: object, pixels: int | None = None) -> DataError:
    """The refusal of an image over the pixel limit (ours, or Pillow's DecompressionBombError, whose message
    gives the size and twice our limit, Pillow's error threshold)."""
    if pixels is None:
        found = re.search(r"\((\d+) pixels\)", str(claim))
        size = f"{int(found.group(1)):,} pixels" if found else "a size"
    else:
        size = f"{claim} = {pixels:,} pixels"
    return DataError(f"image {what} claims {size}, over the limit of {max_image_pixels():,} pixels "
                     "(MEDHARNESS_MAX_IMAGE_PIXELS); refused before decoding")


def open_bytes(data: bytes, what: str) -> Image:
    """Decode one image to RGB. Every failure (not an image, truncated, over the pixel limit, a decoder's own
    error) is a DataError naming the image: one bad file is one sample's error, never the run's."""
    from PIL import Image

    try:
        max_image_pixels()
        img = Image.open(io.BytesIO(data))
        _check_size(img.size, what)
        img.load()
        return img.convert("RGB")
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow checks the size inside Image.open, before we can
        raise _over_limit(what, exc) from None
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, OSError, DecompressionBombError, ...
        raise DataError(f"corrupt image {what}: {type(exc).__name__}: {exc}") from None


def open_local(root: Path | None, ref: str) -> Image:
    if root is None:
        raise DataError("local source used without a data dir")
    path = (root / ref).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"image path '{ref}' resolves outside the data root {root}")
    if not path.is_file():
        raise DataError(f"missing image '{ref}' (looked for {path})")
    return open_bytes(path.read_bytes(), f"'{ref}'")


class LocalFiles(Strict):
    """Base of sources that read files under a data dir given at run time (`bind`)."""

    _root: Path | None = PrivateAttr(default=None)

    def bind(self, root: Path) -> Any:
        bound = self.model_copy()
        bound._root = root.resolve()
        return bound

    @property
    def root(self) -> Path:
        if self._root is None:
            raise DataError(f"{getattr(self, 'kind', 'local')} source used without a data dir")
        return self._root

    def open_image(self, ref: str) -> Image:
        return open_local(self._root, ref)


# --- sizes -------------------------------------------------------------------------------------


class Resize(Strict):
    """Qwen2.5-VL's image resize (`smart_resize`): sides rounded to multiples of `factor`, total pixels kept
    within [min_pixels, max_pixels]. Defaults = the Qwen2-VL / Qwen2.5-VL processor defaults; set `max_pixels`
    to the value your processor uses (e.g. 1003520 = 1280 x 28 x 28) when it is smaller."""

    factor: int = Field(28, description="each side is rounded to a multiple of this many pixels")
    min_pixels: int = Field(56 * 56, description="the fewest pixels (width x height) of the resized image")
    max_pixels: int = Field(16384 * 28 * 28, description="the most pixels (width x height) of the resized "
                            "image; set it to your processor's when that is smaller (e.g. 1003520 = "
                            "1280 x 28 x 28)")


def qwen_resized_size(width: int, height: int, resize: Resize | None = None) -> list[int]:
    """[w, h] of the image as Qwen2.5-VL sees it (qwen_vl_utils / transformers `smart_resize`)."""
    r = resize or Resize()
    if width <= 0 or height <= 0:
        raise DataError(f"bad image size {width} x {height}")
    h_bar = max(r.factor, round(height / r.factor) * r.factor)
    w_bar = max(r.factor, round(width / r.factor) * r.factor)
    if h_bar * w_bar > r.max_pixels:
        beta = math.sqrt(height * width / r.max_pixels)
        h_bar = max(r.factor, math.floor(height / beta / r.factor) * r.factor)
        w_bar = max(r.factor, math.floor(width / beta / r.factor) * r.factor)
    elif h_bar * w_bar < r.min_pixels:
        beta = math.sqrt(r.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / r.factor) * r.factor
        w_bar = math.ceil(width * beta / r.factor) * r.factor
    return [w_bar, h_bar]


def image_header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header only (PIL opens lazily; no pixel decoding)."""
    from PIL import Image

    try:
        max_image_pixels()
        with Image.open(path) as img:
            _check_size(img.size, str(path))
            return img.size
    except FileNotFoundError:
        raise DataError(f"missing image {path}") from None
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise _over_limit(str(path), exc) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
        raise DataError(f"corrupt image {path}: {type(exc).__name__}: {exc}") from None


SIZE_META = frozenset({"image_size", "resized_size", "image_width", "image_height", "resized_width",
                       "resized_height"})


def column_meta(columns: Columns) -> frozenset[str]:
    """The meta fields a column mapping gives every sample (what `meta_fields` of a row-based source says)."""
    derived = {"answer_type", "answer_type_derived"} if columns.derive_answer_type else set()
    return frozenset({*columns.meta, *derived})


def size_meta(width: int, height: int, resize: Resize | None = None) -> dict[str, Any]:
    """The meta fields every box sample carries (lists for parsers, scalars for prompt placeholders)."""
    rw, rh = qwen_resized_size(width, height, resize)
    return {"image_size": [width, height], "resized_size": [rw, rh], "image_width": width,
            "image_height": height, "resized_width": rw, "resized_height": rh}
