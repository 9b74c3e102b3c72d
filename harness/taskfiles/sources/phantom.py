"""The `phantom` source: the generated phantom benchmark (`medharness.taskfiles.phantom`), no files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from medharness.core.errors import DataError
from medharness.core.records import Sample, Strict
from medharness.taskfiles.sources.base import Columns, LoadParams

if TYPE_CHECKING:
    from PIL.Image import Image


class PhantomSource(Strict):
    """The generated phantom benchmark: deterministic from the seed, no files. Train split = seed + 1000."""

    kind: Literal["phantom"]
    question: Literal["presence", "count", "side", "size", "box"]
    seed: int = 0
    n: int = 200
    size: int = 224

    def available(self, root: Path, split: str) -> bool:
        return False

    def label(self, split: str) -> str:
        return f"phantom {self.question} seed={self.seed} [{split}]"

    def meta_fields(self, columns: Columns) -> frozenset[str]:
        return frozenset({"answer_type", "n_lesions", "image_size", "kind"})

    def load(self, params: LoadParams, split: str) -> list[Sample]:
        from medharness.taskfiles import phantom

        seed = self.seed if split == "test" else self.seed + 1000
        return phantom.make_samples(self.question, seed=seed, n=self.n, task=params.task, size=self.size)

    def open_image(self, ref: str) -> Image:
        from medharness.taskfiles import phantom

        try:
            return phantom.open_image(ref)
        except ValueError as exc:
            raise DataError(str(exc)) from None
