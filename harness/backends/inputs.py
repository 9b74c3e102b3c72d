"""A task's samples as model inputs: prompts rendered, images loaded (and replaced as `--ablate` asks).

The run loop, the judges and the trainers build their requests here, so a model sees the same images in
training as in evaluation. A sample whose image cannot be loaded gets a failed `Generation` (recorded and
counted), never an exception that stops the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medharness.backends.base import Request
from medharness.core.errors import DataError
from medharness.core.records import Generation, GenerationSettings, Prompt, Sample
from medharness.taskfiles import ablation

if TYPE_CHECKING:
    from medharness.taskfiles.task import Task


@dataclass
class ImageLoader:
    """Loads a prompt's images for one task; `ablate` replaces them (blank | noise | shuffle), seeded."""

    task: Task
    samples: Sequence[Sample]
    ablate: str | None = None
    seed: int = 0
    _partners: dict[str, str] = field(default_factory=dict, init=False)
    _by_id: dict[str, Sample] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        ablation.check(self.ablate)
        if self.ablate == "shuffle":
            self._partners = ablation.partners([s.id for s in self.samples], self.seed)
            self._by_id = {s.id: s for s in self.samples}

    def partner(self, sample: Sample) -> Sample:
        """Whose images `--ablate shuffle` shows for `sample` (a seeded derangement: never its own)."""
        return self._by_id[self._partners[sample.id]]

    def __call__(self, sample: Sample, refs: Sequence[str]) -> list[Any]:
        if self.ablate == "shuffle":
            refs = list(self.partner(sample).images[: len(refs)])
        images = [self.task.open_image(ref) for ref in refs]
        if self.ablate == "blank":
            return [ablation.blank(im) for im in images]
        if self.ablate == "noise":
            return [ablation.noise(im, self.seed, f"{sample.id}/{i}") for i, im in enumerate(images)]
        return images


def build_requests(task: Task, batch: Sequence[Sample], settings: GenerationSettings,
                   images: ImageLoader | None, fingerprint: str = "") -> tuple[dict[str, Prompt],
                   list[Request], dict[str, Generation]]:
    """Prompts by sample id, the requests to send, and a failed Generation for each sample whose images could
    not be loaded. `images=None`: the backend reads no pixels (baselines, replay)."""
    prompts = {s.id: task.render(s, settings) for s in batch}
    requests: list[Request] = []
    failed: dict[str, Generation] = {}
    for sample in batch:
        prompt = prompts[sample.id]
        try:
            pixels = images(sample, prompt.image_refs()) if images is not None else []
        except DataError as exc:
            failed[sample.id] = Generation(sample_id=sample.id, text="", model=fingerprint,
                                           error=f"image: {exc}")
            continue
        requests.append(Request(prompt=prompt, images=pixels))
    return prompts, requests, failed
