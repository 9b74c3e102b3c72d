"""The `hf` source: Hugging Face `datasets.load_dataset` (a hub id, or a local folder in hub format)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr

from medharness.core.errors import DataError
from medharness.core.records import Sample, Strict
from medharness.taskfiles.sources.base import Columns, LoadParams, column_meta, open_bytes, rows_to_samples

if TYPE_CHECKING:
    from PIL.Image import Image


class HubSource(Strict):
    """`datasets.load_dataset(dataset, name, split=..., revision=...)`: a hub id or a local hub-format
    folder."""

    kind: Literal["hf"] = Field(description="Hugging Face `datasets` (needs the `data` extra)")
    dataset: str = Field(description="a hub dataset id (e.g. flaviagiammarino/vqa-rad) or a local folder in "
                         "hub format")
    name: str | None = Field(None, description="the dataset's configuration (`load_dataset`'s name); null: "
                             "the default one")
    revision: str | None = Field(None, description="the hub revision (branch, tag or commit); null: the "
                                 "default")
    splits: dict[str, str] = Field(default_factory=dict, description="task split -> hub split name; a split "
                                   "not listed has its own name on the hub")
    data_files: dict[str, str] | None = Field(
        None, description="hub split -> file in the repo, for repos of plain CSV / JSON files "
        "(`load_dataset`'s data_files)")
    image_column: str | None = Field("image", description="the image column, decoded lazily; null, or a "
                                     "column the copy lacks: samples without images")
    columns: Columns | None = Field(None, description="this source's column mapping (`Columns`); null: the "
                                    "task's")
    _data: dict[str, Any] = PrivateAttr(default_factory=dict)

    def available(self, root: Path, split: str) -> bool:
        return False

    def label(self, split: str) -> str:
        return f"hub {self.dataset} [{self.splits.get(split, split)}]@{self.revision or 'default'}"

    def dataset_split(self, split: str) -> Any:
        if split not in self._data:
            try:
                import datasets
            except ImportError:
                raise DataError(f"could not load {self.dataset} from the hub: that needs the `data` extra "
                                "(pip install 'medharness[data]'); or pass --data-dir DIR with a local "
                                "copy") from None
            hub_split = self.splits.get(split, split)
            try:
                ds = datasets.load_dataset(self.dataset, self.name, split=hub_split, revision=self.revision,
                                           data_files=self.data_files)
            except Exception as exc:  # noqa: BLE001 - network, auth, missing split: all end here
                raise DataError(
                    f"could not load {self.dataset} split '{hub_split}' from the hub ({type(exc).__name__}: "
                    f"{exc}); offline? pass --data-dir DIR with a local copy"
                ) from None
            if self.image_column and self.image_column in ds.column_names:
                ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
            self._data[split] = ds
        return self._data[split]

    def meta_fields(self, columns: Columns) -> frozenset[str]:
        return column_meta(self.columns or columns)

    def load(self, params: LoadParams, split: str) -> list[Sample]:
        ds = self.dataset_split(split)
        rows = ds.remove_columns([self.image_column]) if self.image_column in ds.column_names else ds
        has_image = self.image_column in ds.column_names

        def ref(_: dict[str, Any], index: int) -> str | None:
            return f"hf:{split}/{index}" if has_image else None

        return rows_to_samples(rows.to_list(), params, self.columns or params.columns, ref)

    def open_image(self, ref: str) -> Image:
        split, _, index = ref.removeprefix("hf:").partition("/")
        cell = self.dataset_split(split)[int(index)][self.image_column]
        if cell.get("bytes"):
            return open_bytes(cell["bytes"], ref)
        if cell.get("path"):
            return open_bytes(Path(cell["path"]).read_bytes(), ref)
        raise DataError(f"no image data for {ref}")
