"""Sources of files under the data dir: `local` (JSON / JSONL / CSV / TSV / pipe-separated text + an image
folder) and `npz` (the MedMNIST layout)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from medharness.core.datafiles import Record, read_records
from medharness.core.errors import DataError
from medharness.core.records import Sample
from medharness.taskfiles.sources.base import (
    SIZE_META,
    Columns,
    LoadParams,
    LocalFiles,
    Resize,
    column_meta,
    image_header_size,
    rows_to_samples,
    size_meta,
)

if TYPE_CHECKING:
    from PIL.Image import Image


class LocalSource(LocalFiles):
    """Files on disk under the data dir: `path` may hold `{split}` (e.g. `{split}set.json`).

    `path` may instead map each split to its file (`{test: X_Test.txt}`): a split without a file is then
    absent, never silently the test file. `image_suffix` is appended to the image column (ids without `.jpg`).
    `format` (default: from the suffix; `.txt` needs it): json (a list, or an object holding one), jsonl, csv,
    tsv or psv (pipe-separated, as ImageCLEF VQA-Med). `fieldnames` names the columns of a file WITHOUT a
    header row; in tsv/psv the last column keeps any further separators, and quotes are plain text.
    `question`: a fixed question for files without a question column. `classes`: the class names given to
    every sample as its options (a gold outside them is an error), or `from_data` = the sorted distinct golds
    of the split. With `columns.box`, the target is the box and `meta.image_size` / `resized_size` come from
    the image header (`resize` as for the `voc` kind)."""

    kind: Literal["local"] = Field(description="files under the data dir")
    path: str | dict[str, str] = Field(
        description="the data file under the data dir, `{split}` replaced by the split (e.g. "
        "`{split}set.json`); or split -> file (e.g. {test: X_Test.txt}): a split without a file is absent")
    image_dir: str = Field("", description="the folder under the data dir that the image column's values are "
                           "relative to; a path resolving outside the data dir is refused")
    image_suffix: str = Field("", description="appended to each image column value (e.g. `.jpg` for bare "
                              "ids)")
    columns: Columns | None = Field(None, description="this source's column mapping (`Columns`); null: the "
                                    "task's")
    format: Literal["auto", "json", "jsonl", "csv", "tsv", "psv"] = Field(
        "auto", description="json (a list, or an object holding one), jsonl, csv, tsv or psv "
        "(pipe-separated, as ImageCLEF VQA-Med); auto: from the suffix (.jsonl, .csv, .tsv, .psv; any other "
        "is json, so `.txt` needs it)")
    fieldnames: list[str] | None = Field(
        None, description="the column names of a file without a header row; in tsv / psv the last column "
        "keeps any further separators, and quotes are plain text")
    question: str | None = Field(None, description="a fixed question for every row (files without a question "
                                 "column); null: the question column")
    classes: list[str] | Literal["from_data"] | None = Field(
        None, description="class names given to every sample as its options (a gold outside them is an "
        "error; `meta.class_name` is the gold), or from_data: the sorted distinct golds of the split")
    resize: Resize = Field(Resize(), description="with `columns.box`: the processor's resize, which gives "
                           "`meta.resized_size` (`Resize`); `meta.image_size` is read from the image header")

    def file_for(self, split: str) -> str | None:
        """The split's file, relative to the data dir (None: this source has no such split)."""
        if isinstance(self.path, dict):
            return self.path.get(split)
        return self.path.format(split=split)

    def available(self, root: Path, split: str) -> bool:
        name = self.file_for(split)
        return name is not None and (root / name).is_file()

    def label(self, split: str) -> str:
        return f"local {self.file_for(split) or f'(no {split} file)'}"

    def file_format(self, file: Path) -> str:
        if self.format != "auto":
            return self.format
        return {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".psv": "psv"}.get(file.suffix, "json")

    def read_rows(self, split: str) -> list[Record]:
        name = self.file_for(split)
        if name is None:
            raise DataError(f"no '{split}' split: this local source has files for {sorted(self.path)} only")
        file = self.root / name
        if not file.is_file():
            raise DataError(f"{file} does not exist")
        return read_records(file, self.file_format(file), self.fieldnames)

    def meta_fields(self, columns: Columns) -> frozenset[str]:
        """The meta fields every sample of this source carries (task files are checked against them)."""
        columns = self.columns or columns
        return column_meta(columns) | ({"class_name"} if self.classes is not None else set()) | (
            SIZE_META if columns.box else set())

    def load(self, params: LoadParams, split: str) -> list[Sample]:
        columns = self.columns or params.columns
        image_col = columns.image

        def ref(row: dict[str, Any], _: int) -> str | None:
            if not image_col:
                return None
            return str(PurePosixPath(self.image_dir) / f"{row[image_col]}{self.image_suffix}")

        records = self.read_rows(split)
        samples = rows_to_samples([r.data for r in records], params, columns, ref, self.question,
                                  where=[r.where for r in records])
        if self.classes is not None:
            samples = self._with_classes(samples, params.task)
        if columns.box:
            samples = [s.model_copy(update={"meta": {**s.meta, **self._sizes(s)}}) for s in samples]
        return samples

    def _with_classes(self, samples: list[Sample], task: str) -> list[Sample]:
        classes = (sorted({str(s.target) for s in samples}) if self.classes == "from_data"
                   else list(self.classes or []))
        out = []
        for s in samples:
            if str(s.target) not in classes:
                raise DataError(f"task {task}: sample {s.id} has label '{s.target}', not among {classes}")
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

    kind: Literal["npz"] = Field(description="a MedMNIST `.npz` under the data dir")
    path: str | list[str] = Field(description="the `.npz` file under the data dir, or candidates: the first "
                                  "found wins (e.g. the 224 px file, then the 28 px one)")
    classes: list[str] = Field(description="the class names, by label index: every sample's options, and the "
                               "target unless `ordinal`")
    question: str = Field("What does this image show?", description="the question asked of every image")
    ordinal: bool = Field(False, description="true: the target is the integer label (a grade) instead of the "
                          "class name")

    @property
    def candidates(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    def available(self, root: Path, split: str) -> bool:
        return any((root / p).is_file() for p in self.candidates)

    def label(self, split: str) -> str:
        return f"npz {' or '.join(self.candidates)} [{split}]"

    @cached_property
    def arrays(self) -> Any:
        import numpy as np

        if self._root is None:
            raise DataError("npz source used without a data dir")
        for p in self.candidates:
            if (self._root / p).is_file():
                return np.load(self._root / p, mmap_mode="r")
        raise DataError(f"none of {self.candidates} in {self._root}")

    def meta_fields(self, columns: Columns) -> frozenset[str]:
        return frozenset({"label", "class_name", "image_size"})

    def load(self, params: LoadParams, split: str) -> list[Sample]:
        key = f"{split}_labels"
        if key not in self.arrays:
            raise DataError(f"task {params.task}: the npz has no '{key}' (has {sorted(self.arrays.files)})")
        labels = self.arrays[key].reshape(len(self.arrays[key]), -1)[:, 0]
        shape = self.arrays[f"{split}_images"].shape
        out = []
        for i, label in enumerate(labels.tolist()):
            if not 0 <= label < len(self.classes):
                raise DataError(f"task {params.task}: {split} label {label} at {i} outside classes "
                                f"{self.classes}")
            out.append(Sample(
                id=f"{split}-{i}", task=params.task, question=self.question,
                target=int(label) if self.ordinal else self.classes[label],
                images=(f"npz:{split}/{i}",), choices=tuple(self.classes),
                meta={"label": int(label), "class_name": self.classes[label],
                      "image_size": [shape[2], shape[1]]},
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
