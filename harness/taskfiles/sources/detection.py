"""Sources for box and lesion datasets: Pascal-VOC folders (or their CSV export) and HAM10000.

Kinds (members of `medharness.taskfiles.sources.SourceSpec`):
- `voc`: `Annotations/<id>.xml` + `JPEGImages/<id>.jpg` + `ImageSets/{split}.txt` (BCCD and any VOC copy), or
  the same boxes from a CSV with NAMED columns (`csv:` + `csv_columns:`), so a file that orders its columns
  `xmin,xmax,ymin,ymax` (BCCD's `test.csv`) gives the same boxes as the XML. One sample per (image, label
  present): the target is the list of ALL boxes of that label, and the question asks for one of them
  (scored by `best_iou`: the IoU with the best-matching gold box).
- `ham10000`: `HAM10000_metadata.csv` + `HAM10000_images_part_{1,2}/` (or `images/`) + the lesion masks
  `HAM10000_segmentations_lesion_tschandl/<image_id>_segmentation.png`. `target: label` gives the diagnosis;
  `target: box` the lesion box from the mask. Splits are by `lesion_id` (`lesion_split`), so no lesion is in
  two splits.

Box samples carry `meta.image_size = [w, h]` (read from the image header, never decoding pixels) and
`meta.resized_size`, the size Qwen2.5-VL's processor resizes the image to (`qwen_resized_size`), for the
`resized` coordinate convention; scalar copies (`image_width`, ..., `resized_height`) serve prompts.
Boxes are [x1, y1, x2, y2] in continuous absolute pixels of the original image.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, model_validator

from medharness.core.datafiles import read_records, read_text
from medharness.core.errors import DataError
from medharness.core.records import Sample, Strict
from medharness.taskfiles.sources.base import (
    SIZE_META,
    Columns,
    LoadParams,
    LocalFiles,
    Resize,
    image_header_size,
    number,
    size_meta,
)

# --- Pascal VOC --------------------------------------------------------------------------------


def _check_box(box: list[int | float], what: str) -> list[int | float]:
    if box[2] < box[0] or box[3] < box[1]:
        raise DataError(f"{what}: reversed box {box} (x2 < x1 or y2 < y1); columns in the wrong order?")
    return box


class BoxColumns(Strict):
    """Column NAMES of a box CSV (one row per box). Named, so the column order in the file does not matter."""

    image: str = Field("filename", description="the image file name column (its stem is the image id)")
    label: str = Field("class", description="the box's label column")
    x1: str = Field("xmin", description="the box's left edge column")
    y1: str = Field("ymin", description="the box's top edge column")
    x2: str = Field("xmax", description="the box's right edge column")
    y2: str = Field("ymax", description="the box's bottom edge column")


class VocSource(LocalFiles):
    """Pascal-VOC folders: one sample per (image, label present); target = every box of that label.

    `labels` maps each annotated label to the name the question uses, in sample order; a label not in it is
    an error. With `csv`, boxes come from that CSV (all splits in one file is fine: the split file selects
    the images) instead of the XML, and image sizes from the image headers."""

    kind: Literal["voc"] = Field(description="Pascal-VOC folders (or their CSV export) under the data dir")
    labels: dict[str, str] = Field(min_length=1, description="annotated label -> the name the question uses, "
                                   "in sample order; a label not in it is an error")
    question: str = Field("Give the bounding box of one {name} in this image.",
                          description="the question; `{name}` is the label's name from `labels`")
    annotations: str = Field("Annotations", description="the folder of the `<image id>.xml` annotations "
                             "(unused with `csv`)")
    image_dir: str = Field("JPEGImages", description="the folder of the images")
    image_ext: str = Field(".jpg", description="the images' suffix, appended to the image id")
    split_file: str | list[str] = Field(
        default_factory=lambda: ["ImageSets/{split}.txt", "ImageSets/Main/{split}.txt"],
        description="the split's list of image ids (the first word of each line), `{split}` replaced by the "
        "split; or candidates: the first found wins")
    csv: str | None = Field(None, description="a CSV of boxes (one row per box, columns named by "
                            "`csv_columns`) read instead of the XML; all splits in one file is fine (the "
                            "split file selects the images); image sizes then come from the image headers")
    csv_columns: BoxColumns = Field(BoxColumns(), description="the column names of `csv` (`BoxColumns`)")
    resize: Resize = Field(Resize(), description="the processor's resize, which gives `meta.resized_size` "
                           "(`Resize`)")

    def _split_file(self, root: Path, split: str) -> Path | None:
        candidates = [self.split_file] if isinstance(self.split_file, str) else self.split_file
        return next((root / c.format(split=split) for c in candidates
                     if (root / c.format(split=split)).is_file()), None)

    def available(self, root: Path, split: str) -> bool:
        boxes = (root / self.csv).is_file() if self.csv else (root / self.annotations).is_dir()
        return boxes and self._split_file(root, split) is not None

    def label(self, split: str) -> str:
        return f"voc {self.csv or self.annotations} [{split}]"

    def image_ids(self, split: str) -> list[str]:
        file = self._split_file(self.root, split)
        if file is None:
            raise DataError(f"voc: no split file for '{split}' ({self.split_file}) under {self.root}")
        return [line.split()[0] for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _xml(self, image_id: str) -> tuple[tuple[int, int] | None, list[tuple[str, list[int | float]]]]:
        file = self.root / self.annotations / f"{image_id}.xml"
        if not file.is_file():
            raise DataError(f"voc: missing annotation {file}")
        try:
            tree = ET.parse(file).getroot()
        except ET.ParseError as exc:
            raise DataError(f"voc: {file} is not valid XML: {exc}") from None
        size = None
        w, h = tree.findtext("size/width"), tree.findtext("size/height")
        if w and h and number(w, str(file)) > 0 and number(h, str(file)) > 0:
            size = (int(number(w, str(file))), int(number(h, str(file))))
        objects = []
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if bb is None:
                raise DataError(f"voc: {file}: object '{name}' has no bndbox")
            box = [number(bb.findtext(k), f"{file} {k}") for k in ("xmin", "ymin", "xmax", "ymax")]
            objects.append((name, _check_box(box, str(file))))
        return size, objects

    def _csv_boxes(self) -> dict[str, list[tuple[str, list[int | float]]]]:
        file = self.root / str(self.csv)
        rows = [r.data for r in read_records(file, "csv")]
        c = self.csv_columns
        out: dict[str, list[tuple[str, list[int | float]]]] = {}
        for n, row in enumerate(rows, 2):
            try:
                stem = PurePosixPath(row[c.image].strip()).stem
                box = [number(row[k], f"{file}:{n} {k}") for k in (c.x1, c.y1, c.x2, c.y2)]
                out.setdefault(stem, []).append((row[c.label].strip(), _check_box(box, f"{file}:{n}")))
            except KeyError as exc:
                raise DataError(f"voc: {file} has no column {exc}; columns: {sorted(row)}") from None
        return out

    def meta_fields(self, columns: Columns) -> frozenset[str]:
        return frozenset({"label", "name", "image_id", "n_boxes"}) | SIZE_META

    def load(self, params: LoadParams, split: str) -> list[Sample]:
        by_csv = self._csv_boxes() if self.csv else None
        out = []
        for image_id in self.image_ids(split):
            ref = str(PurePosixPath(self.image_dir) / f"{image_id}{self.image_ext}")
            if by_csv is not None:
                size, objects = None, by_csv.get(image_id, [])
            else:
                size, objects = self._xml(image_id)
            if size is None:
                size = image_header_size(self.root / ref)
            unknown = sorted({name for name, _ in objects} - set(self.labels))
            if unknown:
                raise DataError(f"task {params.task}: image {image_id} has label(s) {unknown} not in the "
                                f"source's labels {list(self.labels)}")
            for label, name in self.labels.items():
                boxes = [box for obj, box in objects if obj == label]
                if not boxes:
                    continue
                meta = {"label": label, "name": name, "image_id": image_id, "n_boxes": len(boxes),
                        **size_meta(size[0], size[1], self.resize)}
                if params.keep(meta):
                    out.append(Sample(id=f"{image_id}/{label}", task=params.task,
                                      question=self.question.format(name=name), target=boxes,
                                      images=(ref,), meta=meta))
        return out


# --- HAM10000 ----------------------------------------------------------------------------------

HAM_CLASSES = {
    "akiec": "actinic keratoses and intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesions",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevi",
    "vasc": "vascular lesions",
}


def lesion_split(lesion_id: str, seed: int, fractions: dict[str, float]) -> str:
    """The split of a lesion: u = first 8 bytes of sha256("{seed}:{lesion_id}") / 2**64, then the first split
    whose cumulative fraction (in the order given) exceeds u. Every image of a lesion lands in one split."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{lesion_id}".encode()).digest()[:8], "big") / 2.0**64
    total = 0.0
    for name, fraction in fractions.items():
        total += fraction
        if u < total:
            return name
    return list(fractions)[-1]


def mask_box(path: Path, threshold: int = 127) -> tuple[list[int], tuple[int, int]]:
    """([x1, y1, x2, y2], (w, h)) of the pixels > threshold in a mask: pixel edges, so the box is
    [min x, min y, max x + 1, max y + 1] in continuous coordinates (a one-pixel lesion has area 1)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L"))
    except FileNotFoundError:
        raise DataError(f"missing mask {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"corrupt mask {path}: {exc}") from None
    ys, xs = np.nonzero(array > threshold)
    if not len(xs):
        raise DataError(f"mask {path} has no pixel > {threshold}: no lesion to box")
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return box, (array.shape[1], array.shape[0])


class Ham10000Source(LocalFiles):
    """HAM10000 in its official layout; splits by lesion_id (`split: all` = every image)."""

    kind: Literal["ham10000"] = Field(description="the HAM10000 release under the data dir")
    target: Literal["label", "box"] = Field(
        "label", description="label: the diagnosis's class name, the classes as options; box: the lesion's "
        "box from its segmentation mask")
    classes: dict[str, str] = Field(default_factory=lambda: dict(HAM_CLASSES),
                                    description="dx code -> class name, in option order; a dx not in it is "
                                    "an error")
    question: str = Field("Which diagnosis does this dermoscopic image of a skin lesion show?",
                          description="the question asked of every image")
    metadata: str | list[str] = Field(
        default_factory=lambda: ["HAM10000_metadata.csv", "HAM10000_metadata"],
        description="the metadata file (comma- or tab-separated), or candidates: the first found wins")
    image_dirs: list[str] = Field(
        default_factory=lambda: ["HAM10000_images_part_1", "HAM10000_images_part_2", "images"],
        description="the folders searched for `<image_id><image_ext>`; the first that holds an image wins")
    image_ext: str = Field(".jpg", description="the images' suffix (any letter case)")
    mask_dir: str = Field("HAM10000_segmentations_lesion_tschandl",
                          description="the folder of the lesion masks (needed by `target: box`)")
    mask_suffix: str = Field("_segmentation.png", description="appended to the image id to name its mask")
    mask_threshold: int = Field(127, description="mask pixels brighter than this (grey level) are the lesion")
    seed: int = Field(0, description="the seed of the lesion-level split (a hash of seed and lesion_id)")
    fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2},
        description="split -> share of the lesions, in order: non-negative, summing to 1, no split named "
        "`all` (`split: all` is every image)")
    resize: Resize = Field(Resize(), description="with `target: box`: the processor's resize, which gives "
                           "`meta.resized_size` (`Resize`)")

    @model_validator(mode="after")
    def _fractions(self) -> Ham10000Source:
        if "all" in self.fractions or any(f < 0 for f in self.fractions.values()) or \
                abs(sum(self.fractions.values()) - 1.0) > 1e-9:
            raise ValueError("fractions: non-negative, summing to 1, and no split named 'all'")
        return self

    def _metadata(self, root: Path) -> Path | None:
        candidates = [self.metadata] if isinstance(self.metadata, str) else self.metadata
        return next((root / c for c in candidates if (root / c).is_file()), None)

    def available(self, root: Path, split: str) -> bool:
        masks = self.target != "box" or (root / self.mask_dir).is_dir()
        return masks and self._metadata(root) is not None and (split == "all" or split in self.fractions)

    def label(self, split: str) -> str:
        metadata = self.metadata if isinstance(self.metadata, str) else self.metadata[0]
        return f"ham10000 {metadata} ({self.target}) [{split}]"

    def _image_index(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for folder in self.image_dirs:
            path = self.root / folder
            if path.is_dir():
                for file in path.iterdir():
                    if file.suffix.lower() == self.image_ext.lower():
                        index.setdefault(file.stem, str(PurePosixPath(folder) / file.name))
        return index

    def read_rows(self) -> list[dict[str, str]]:
        file = self._metadata(self.root)
        if file is None:
            raise DataError(f"ham10000: none of {self.metadata} under {self.root}")
        text = read_text(file, "metadata file")
        tabs = file.suffix in (".tab", ".tsv") or ("\t" in text.split("\n", 1)[0])
        rows = [r.data for r in read_records(file, "tsv" if tabs else "csv")]
        missing = {"lesion_id", "image_id", "dx"} - set(rows[0] if rows else {})
        if missing:
            raise DataError(f"ham10000: {file} lacks column(s) {sorted(missing)}")
        return rows

    def meta_fields(self, columns: Columns) -> frozenset[str]:
        """dx_type, age, sex and localization are copied where the metadata file has them."""
        optional = {"dx_type", "age", "sex", "localization"}
        return frozenset({"class_name", "dx", "lesion_id", "image_id", "split", *optional}) | (
            SIZE_META if self.target == "box" else set())

    def load(self, params: LoadParams, split: str) -> list[Sample]:
        if split != "all" and split not in self.fractions:
            raise DataError(f"task {params.task}: no split '{split}' (have {[*self.fractions, 'all']})")
        images = self._image_index()
        names = list(self.classes.values())
        out = []
        for row in self.read_rows():
            lesion, image_id, dx = row["lesion_id"].strip(), row["image_id"].strip(), row["dx"].strip()
            row_split = lesion_split(lesion, self.seed, self.fractions)
            if split != "all" and row_split != split:
                continue
            if dx not in self.classes:
                raise DataError(f"task {params.task}: image {image_id} has dx '{dx}', not in "
                                f"{list(self.classes)}")
            ref = images.get(image_id)
            if ref is None:
                raise DataError(f"task {params.task}: no image {image_id}{self.image_ext} in any of "
                                f"{self.image_dirs}")
            meta: dict[str, Any] = {"class_name": self.classes[dx], "dx": dx, "lesion_id": lesion,
                                    "image_id": image_id, "split": row_split,
                                    **{k: row[k].strip() for k in ("dx_type", "age", "sex", "localization")
                                       if k in row}}
            target: Any = self.classes[dx]
            if self.target == "box":
                target, (w, h) = mask_box(self.root / self.mask_dir / f"{image_id}{self.mask_suffix}",
                                          self.mask_threshold)
                if image_header_size(self.root / ref) != (w, h):
                    raise DataError(f"task {params.task}: mask of {image_id} is {w} x {h}, the image is not")
                meta.update(size_meta(w, h, self.resize))
            if params.keep(meta):
                out.append(Sample(id=image_id, task=params.task, question=self.question, target=target,
                                  images=(ref,), choices=tuple(names) if self.target == "label" else (),
                                  meta=meta))
        return out
