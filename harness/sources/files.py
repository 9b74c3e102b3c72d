"""Data sources: where a task's samples come from, and how their images are opened (lazily).

Kinds: `local` (JSON / JSONL / CSV / TSV / pipe-separated text + an image folder), `npz` (MedMNIST layout), `hf`
(Hugging Face `datasets.load_dataset`: a hub id, or a local folder in hub format), `phantom` (generated), and in
`medharness.sources_detection`: `voc` (Pascal-VOC boxes, or their CSV export) and `ham10000`.
Each source turns raw rows into `Sample`s through the task's column mapping; images are
references that only `open_image` decodes, so scoring never touches pixels.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from medharness.errors import DataError
from medharness.records import Sample
from medharness.sources_detection import (
    Ham10000Source,
    LocalFiles,
    Resize,
    VocSource,
    detection_label,
    image_header_size,
    number,
    size_meta,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from medharness.task import TaskConfig

log = logging.getLogger(__name__)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Columns(Strict):
    """Dataset column -> Sample field. `meta` copies extra columns for grouping and metrics."""

    id: str | None = None  # None: the row index
    question: str = "question"
    target: str = "answer"
    image: str | None = None
    choices: list[str] | str | None = None  # several option columns, or one column holding a list
    meta: dict[str, str] = Field(default_factory=dict)  # meta field -> column
    derive_answer_type: bool = False  # no answer_type column: CLOSED iff the gold is yes/no
    strip_choice_letters: bool = False  # options stored as "A: text" / "(B) text": keep only the text
    box: list[str] | None = Field(default=None, min_length=4, max_length=4)  # x1, y1, x2, y2 columns: the target


_OPTION_LETTER = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])\s*[:.)])\s*")


def _strip_letter(option: str, position: int) -> str:
    """'B: Focal' at position 1 -> 'Focal'; only the letter of the option's own position is removed."""
    match = _OPTION_LETTER.match(option)
    if match and (match.group(1) or match.group(2)) == chr(65 + position):
        return option[match.end():].strip()
    return option.strip()


def rows_to_samples(rows: list[dict[str, Any]], config: TaskConfig, columns: Columns, image_ref: Any,
                    question: str | None = None) -> list[Sample]:
    """Apply the task's filter and column mapping; `image_ref(row, index)` gives an image reference.

    `question`: a fixed question for every row (files without a question column)."""
    out = []
    for index, row in enumerate(rows):
        if any(str(row.get(k)) != str(v) for k, v in config.filter.items()):
            continue
        try:
            out.append(_sample(row, index, config, columns, image_ref, question))
        except KeyError as exc:
            raise DataError(f"task {config.name}: row {index} has no column {exc}; columns: {sorted(row)}") from None
    return out


def _sample(row: dict[str, Any], index: int, config: TaskConfig, columns: Columns, image_ref: Any,
            question: str | None = None) -> Sample:
    if columns.box:
        what = f"task {config.name}: row {index}"
        target: Any = [number(row[c], f"{what} column {c}") for c in columns.box]
        if target[2] < target[0] or target[3] < target[1]:
            raise DataError(f"{what}: reversed box {target} (x2 < x1 or y2 < y1); check the `box` column order")
    else:
        target = row[columns.target]
    if not isinstance(target, (list, int, float)):
        target = str(target).strip()
    meta = {field: row[col] for field, col in columns.meta.items()}
    if columns.derive_answer_type and "answer_type" not in meta:
        meta["answer_type"] = "CLOSED" if str(target).strip().lower() in ("yes", "no") else "OPEN"
        meta["answer_type_derived"] = True
    if isinstance(columns.choices, str):
        choices = tuple(str(c) for c in row[columns.choices])
    else:
        choices = tuple(str(row[c]) for c in columns.choices or ())
    if columns.strip_choice_letters:
        choices = tuple(_strip_letter(c, i) for i, c in enumerate(choices))
    ref = image_ref(row, index)
    return Sample(
        id=str(row[columns.id]) if columns.id else str(index),
        task=config.name,
        question=question if question is not None else str(row[columns.question]),
        target=target,
        images=(ref,) if ref else (),
        choices=choices,
        meta=meta,
    )


def _open_bytes(data: bytes, what: str) -> Image:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"corrupt image {what}: {exc}") from None
    return img.convert("RGB")


DELIMITERS = {"csv": ",", "tsv": "\t", "psv": "|"}


class LocalSource(LocalFiles):
    """Files on disk under the data dir: `path` may hold `{split}` (e.g. `{split}set.json`).

    `path` may instead map each split to its file (`{test: X_Test.txt}`): a split without a file is then absent,
    never silently the test file. `image_suffix` is appended to the image column (ids without `.jpg`).
    `format` (default: from the suffix; `.txt` needs it): json (a list, or an object holding one), jsonl, csv,
    tsv or psv (pipe-separated, as ImageCLEF VQA-Med). `fieldnames` names the columns of a file WITHOUT a
    header row; in tsv/psv the last column keeps any further separators, and quotes are plain text.
    `question`: a fixed question for files without a question column. `classes`: the class names given to every
    sample as its options (a gold outside them is an error), or `from_data` = the sorted distinct golds of the
    split. With `columns.box`, the target is the box and `meta.image_size` / `resized_size` come from the image
    header (`resize` as for the `voc` kind)."""

    kind: Literal["local"]
    path: str | dict[str, str]
    image_dir: str = ""
    image_suffix: str = ""
    columns: Columns | None = None
    format: Literal["auto", "json", "jsonl", "csv", "tsv", "psv"] = "auto"
    fieldnames: list[str] | None = None
    question: str | None = None
    classes: list[str] | Literal["from_data"] | None = None
    resize: Resize = Resize()


    def file_for(self, split: str) -> str | None:
        """The split's file, relative to the data dir (None: this source has no such split)."""
        if isinstance(self.path, dict):
            return self.path.get(split)
        return self.path.format(split=split)

    def available(self, root: Path, split: str) -> bool:
        name = self.file_for(split)
        return name is not None and (root / name).is_file()

    def file_format(self, file: Path) -> str:
        if self.format != "auto":
            return self.format
        return {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".psv": "psv"}.get(file.suffix, "json")

    def read_rows(self, split: str) -> list[dict[str, Any]]:
        name = self.file_for(split)
        if name is None:
            raise DataError(f"no '{split}' split: this local source has files for {sorted(self.path)} only")
        file = self.root / name
        if not file.is_file():
            raise DataError(f"{file} does not exist")
        fmt = self.file_format(file)
        if fmt in ("tsv", "psv"):
            return self._delimited(file, DELIMITERS[fmt])
        text = file.read_text(encoding="utf-8")
        try:
            if fmt == "jsonl":
                return [json.loads(line) for line in text.splitlines() if line.strip()]
            if fmt == "csv":
                return list(csv.DictReader(io.StringIO(text), fieldnames=self.fieldnames))
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}: not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise DataError(f"{file}: expected a list of records (or an object holding one)")
        return data

    def _delimited(self, file: Path, sep: str) -> list[dict[str, Any]]:
        """Split lines on `sep` (no quoting); the last field keeps any further separators."""
        lines = [(n, line.rstrip("\r")) for n, line in
                 enumerate(file.read_text(encoding="utf-8-sig").split("\n"), 1) if line.strip()]
        names = self.fieldnames
        if names is None:
            if not lines:
                return []
            names = [h.strip() for h in lines.pop(0)[1].split(sep)]
        rows = []
        for n, line in lines:
            values = line.split(sep, len(names) - 1)
            if len(values) != len(names):
                raise DataError(f"{file}:{n}: {len(values)} field(s), expected {len(names)} ({', '.join(names)})")
            rows.append(dict(zip(names, values, strict=True)))
        return rows

    def load(self, config: TaskConfig, split: str) -> list[Sample]:
        columns = self.columns or config.columns
        image_col = columns.image

        def ref(row: dict[str, Any], _: int) -> str | None:
            if not image_col:
                return None
            return str(PurePosixPath(self.image_dir) / f"{row[image_col]}{self.image_suffix}")

        samples = rows_to_samples(self.read_rows(split), config, columns, ref, self.question)
        if self.classes is not None:
            samples = self._with_classes(samples, config)
        if columns.box:
            samples = [s.model_copy(update={"meta": {**s.meta, **self._sizes(s)}}) for s in samples]
        return samples

    def _with_classes(self, samples: list[Sample], config: TaskConfig) -> list[Sample]:
        classes = sorted({str(s.target) for s in samples}) if self.classes == "from_data" else list(self.classes or [])
        out = []
        for s in samples:
            if str(s.target) not in classes:
                raise DataError(f"task {config.name}: sample {s.id} has label '{s.target}', not among {classes}")
            out.append(s.model_copy(update={"choices": tuple(classes),
                                            "meta": {"class_name": str(s.target), **s.meta}}))
        return out

    def _sizes(self, sample: Sample) -> dict[str, Any]:
        if not sample.images:
            raise DataError(f"sample {sample.id}: a box needs an image to read its size from")
        path = (self.root / sample.images[0]).resolve()
        if not path.is_relative_to(self.root):
            raise DataError(f"image path '{sample.images[0]}' resolves outside the data root {self.root}")
        width, height = image_header_size(path)
        return size_meta(width, height, self.resize)



class NpzSource(LocalFiles):
    """MedMNIST layout: arrays `{split}_images` and `{split}_labels` in one `.npz` (any resolution)."""

    kind: Literal["npz"]
    path: str | list[str]  # candidates, first found wins (e.g. the 224 px file, then the 28 px one)
    classes: list[str]
    question: str = "What does this image show?"
    ordinal: bool = False  # target is the integer grade instead of the class name

    @property
    def candidates(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    def available(self, root: Path, split: str) -> bool:
        return any((root / p).is_file() for p in self.candidates)

    @cached_property
    def arrays(self) -> Any:
        import numpy as np

        if self._root is None:
            raise DataError("npz source used without a data dir")
        for p in self.candidates:
            if (self._root / p).is_file():
                return np.load(self._root / p, mmap_mode="r")
        raise DataError(f"none of {self.candidates} in {self._root}")

    def load(self, config: TaskConfig, split: str) -> list[Sample]:
        key = f"{split}_labels"
        if key not in self.arrays:
            raise DataError(f"task {config.name}: the npz has no '{key}' (has {sorted(self.arrays.files)})")
        labels = self.arrays[key].reshape(len(self.arrays[key]), -1)[:, 0]
        shape = self.arrays[f"{split}_images"].shape
        out = []
        for i, label in enumerate(labels.tolist()):
            if not 0 <= label < len(self.classes):
                raise DataError(f"task {config.name}: {split} label {label} at {i} outside classes {self.classes}")
            out.append(Sample(
                id=f"{split}-{i}", task=config.name, question=self.question,
                target=int(label) if self.ordinal else self.classes[label],
                images=(f"npz:{split}/{i}",), choices=tuple(self.classes),
                meta={"label": int(label), "class_name": self.classes[label], "image_size": [shape[2], shape[1]]},
            ))
        return out

    def open_image(self, ref: str) -> Image:
        from PIL import Image

        split, _, index = ref.removeprefix("npz:").partition("/")
        try:
            array = self.arrays[f"{split}_images"][int(index)]
        except (KeyError, ValueError, IndexError):
            raise DataError(f"bad npz image reference '{ref}'") from None
        return Image.fromarray(array).convert("RGB")


class HubSource(Strict):
    """`datasets.load_dataset(dataset, name, split=..., revision=...)`: a hub id or a local hub-format folder."""

    kind: Literal["hf"]
    dataset: str
    name: str | None = None
    revision: str | None = None
    splits: dict[str, str] = Field(default_factory=dict)  # task split -> hub split name
    data_files: dict[str, str] | None = None  # hub split -> file in the repo (repos of plain CSV/JSON files)
    image_column: str | None = "image"
    columns: Columns | None = None
    is_local: ClassVar[bool] = False
    _data: dict[str, Any] = PrivateAttr(default_factory=dict)

    def available(self, root: Path, split: str) -> bool:
        return False

    def dataset_split(self, split: str) -> Any:
        if split not in self._data:
            try:
                import datasets
            except ImportError:
                raise DataError("hub datasets need the `data` extra: pip install 'medharness[data]'") from None
            hub_split = self.splits.get(split, split)
            try:
                ds = datasets.load_dataset(self.dataset, self.name, split=hub_split, revision=self.revision,
                                           data_files=self.data_files)
            except Exception as exc:  # network, auth, missing split: all end here
                raise DataError(
                    f"could not load {self.dataset} split '{hub_split}' from the hub ({type(exc).__name__}: {exc}); "
                    "offline? pass --data-dir DIR with a local copy"
                ) from None
            if self.image_column and self.image_column in ds.column_names:
                ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
            self._data[split] = ds
        return self._data[split]

    def load(self, config: TaskConfig, split: str) -> list[Sample]:
        ds = self.dataset_split(split)
        rows = ds.remove_columns([self.image_column]) if self.image_column in ds.column_names else ds
        has_image = self.image_column in ds.column_names

        def ref(_: dict[str, Any], index: int) -> str | None:
            return f"hf:{split}/{index}" if has_image else None

        return rows_to_samples(rows.to_list(), config, self.columns or config.columns, ref)

    def open_image(self, ref: str) -> Image:
        split, _, index = ref.removeprefix("hf:").partition("/")
        cell = self.dataset_split(split)[int(index)][self.image_column]
        if cell.get("bytes"):
            return _open_bytes(cell["bytes"], ref)
        if cell.get("path"):
            return _open_bytes(Path(cell["path"]).read_bytes(), ref)
        raise DataError(f"no image data for {ref}")


class PhantomSource(Strict):
    """The generated phantom benchmark: deterministic from the seed, no files. Train split = seed + 1000."""

    kind: Literal["phantom"]
    question: Literal["presence", "count", "side", "size", "box"]
    seed: int = 0
    n: int = 200
    size: int = 224
    is_local: ClassVar[bool] = False

    def available(self, root: Path, split: str) -> bool:
        return False

    def load(self, config: TaskConfig, split: str) -> list[Sample]:
        from medharness import phantom

        seed = self.seed if split == "test" else self.seed + 1000
        return phantom.make_samples(self.question, seed=seed, n=self.n, task=config.name, size=self.size)

    def open_image(self, ref: str) -> Image:
        from medharness import phantom

        try:
            return phantom.open_image(ref)
        except ValueError as exc:
            raise DataError(str(exc)) from None


SourceSpec = Annotated[LocalSource | NpzSource | HubSource | PhantomSource | VocSource | Ham10000Source,
                      Field(discriminator="kind")]


def source_label(source: Any, split: str) -> str:
    if isinstance(source, LocalSource):
        return f"local {source.file_for(split) or f'(no {split} file)'}"
    if isinstance(source, NpzSource):
        return f"npz {' or '.join(source.candidates)} [{split}]"
    if isinstance(source, HubSource):
        return f"hub {source.dataset} [{source.splits.get(split, split)}]@{source.revision or 'default'}"
    if isinstance(source, (VocSource, Ham10000Source)):
        return detection_label(source, split)
    return f"phantom {source.question} seed={source.seed} [{split}]"
