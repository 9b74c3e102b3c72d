"""The backend interface: a batch of requests in, a batch of generations out.

Register a backend class with `@backend("name")`; heavy ones are registered lazily in
`medharness.backends.__init__` as "module:Class" so importing medharness stays fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from medharness.core.records import AnswerSource, Generation, Prompt, Sample
from medharness.core.registry import Registry

if TYPE_CHECKING:
    from PIL.Image import Image

    from medharness.taskfiles.task import Task


@dataclass(frozen=True)
class Request:
    """One prompt with its images already loaded (in the order of `prompt.image_refs()`)."""

    prompt: Prompt
    images: list[Image] = field(default_factory=list)


class Backend(ABC):
    """A model that answers prompts. Subclasses set `name` and implement `generate`."""

    name: ClassVar[str] = ""
    needs_images: ClassVar[bool] = True
    cacheable: ClassVar[bool] = True  # model outputs go through the response cache
    priced: ClassVar[bool] = False  # a paid API: token costs come from `harness/runs/prices.py`

    def __init__(self, model: str, **options: Any) -> None:
        self.model = model
        self.options = options

    @property
    def batch_size_hint(self) -> int:
        """The smallest batch that keeps this backend busy (API backends: their concurrency)."""
        return 1

    @property
    def fingerprint(self) -> str:
        """Identifies the exact model: weights path + content hash, API id + endpoint, ..."""
        return f"{self.name}:{self.model}"

    def prepare(self, task: Task, samples: Sequence[Sample]) -> None:
        """Called once per task before its first batch. Baselines read the train split and each
        sample's answer type and options here; model backends must never look at the targets."""

    def answer_source(self, task: str) -> AnswerSource | None:
        """Where the answers for `task` came from, for a backend that answers without a model (baselines);
        None for a model. Read after `prepare`; recorded in the run log and shown on boards."""
        return None

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Answer every request, in order. A per-sample failure is a Generation with `error` set."""

    def close(self) -> None:
        """Free resources (GPU memory, sessions)."""


BACKENDS: Registry[type[Backend]] = Registry("backend")


def backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def decorator(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        return BACKENDS.register(name, cls)

    return decorator
