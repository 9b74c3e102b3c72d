"""The `phantom` source: the generated phantom benchmark (`medharness.taskfiles.phantom`), no files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from medharness.core.errors import DataError
from medharness.core.records import Sample, Strict
from medharness.taskfiles.sources.base import Columns, LoadParams

if TYPE_CHECKING:
    from PIL.Image import Image


class PhantomTrain(Strict):
    """The train split of a phantom source (every key optional)."""

    seed: int | None = Field(None, ge=0, description="generator seed of the train split; null: the test "
                             "seed + 1000 (never the test seed: the splits must not share scans)")
    n: int | None = Field(None, ge=1, description="samples in the train split; null: the source's n")


class PhantomSource(Strict):
    """The generated phantom benchmark: deterministic from the seed, no files. Train split: `train:`."""

    kind: Literal["phantom"] = Field(description="the generated phantom benchmark, no files")
    question: Literal["presence", "count", "side", "size", "box"] = Field(
        description="what is asked of each scan (medharness.taskfiles.phantom.QUESTIONS)")
    seed: int = Field(0, ge=0, description="generator seed of the test split")
    n: int = Field(200, ge=1, description="samples in the test split")
    size: int = Field(224, ge=32, description="image side in pixels")
    train: PhantomTrain = Field(default_factory=PhantomTrain, description="the train split")

    @model_validator(mode="after")
    def _splits_apart(self) -> PhantomSource:
        if self.train.seed == self.seed:
            raise ValueError(f"train.seed {self.seed} equals the test seed: the splits would share scans")
        return self

    def available(self, root: Path, split: str) -> bool:
        return False

    def label(self, split: str) -> str:
        return f"phantom {self.question} seed={self.seed} [{split}]"

    def meta_fields(self, columns: Columns) -> frozenset[str]:
        return frozenset({"answer_type", "n_lesions", "image_size", "kind"})

    def load(self, params: LoadParams, split: str) -> list[Sample]:
        from medharness.taskfiles import phantom

        if split == "test":
            return phantom.make_samples(self.question, seed=self.seed, n=self.n, task=params.task,
                                        size=self.size)
        train = self.train
        seed = self.seed + 1000 if train.seed is None else train.seed
        return phantom.make_samples(self.question, seed=seed, n=train.n or self.n, task=params.task,
                                    size=self.size)

    def open_image(self, ref: str) -> Image:
        from medharness.taskfiles import phantom

        try:
            return phantom.open_image(ref)
        except ValueError as exc:
            raise DataError(str(exc)) from None
