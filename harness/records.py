"""The plain records that flow through medharness. Read this module first.

Sample --render--> Prompt --Backend.generate--> Generation --Parser--> Answer --Metric--> Score
ResultRow (one per sample: samples/<task>.jsonl); TaskSummary (run.json).

All records are frozen pydantic models that round-trip through JSON. Images are referenced
(a path relative to the data root, or a `scheme:...` reference a data source resolves), never
held as decoded pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    """The one strict base: frozen, and an unknown key is an error (records, task files, sources, panels)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Record(Strict):
    def to_json(self) -> str:
        return self.model_dump_json()


class Sample(Record):
    """One benchmark item. `target` is the gold answer: text, an option letter, a grade or a box."""

    id: str
    task: str
    question: str
    target: Any
    images: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    meta: dict[str, Any] = Field(default_factory=dict)


class GenerationSettings(Record):
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Part(Record):
    """One piece of a chat message: text, or an image reference."""

    type: Literal["text", "image"]
    text: str | None = None
    image: str | None = None


class Message(Record):
    role: Literal["system", "user", "assistant"]
    content: tuple[Part, ...]


class Prompt(Record):
    sample_id: str
    messages: tuple[Message, ...]
    settings: GenerationSettings = GenerationSettings()

    @property
    def hash(self) -> str:
        """Stable hash of the rendered messages and settings (not of the pixels)."""
        blob = json.dumps(self.model_dump(exclude={"sample_id"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def image_refs(self) -> list[str]:
        return [p.image for m in self.messages for p in m.content if p.type == "image" and p.image]


class Generation(Record):
    """What a backend produced for one prompt. `error` set means no usable text was produced."""

    sample_id: str
    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str = ""
    model_version: str | None = None  # the exact model the provider says answered (e.g. gpt-4o-mini-2024-07-18)
    error: str | None = None


class Answer(Record):
    """A parsed answer. `value is None` means unparseable: data, never an exception."""

    value: Any = None
    parser: str = ""
    note: str = ""

    @property
    def parsed(self) -> bool:
        return self.value is not None


class Score(Record):
    """One metric value for one sample. NaN means unscored, never silently 0."""

    metric: str
    value: float


class ResultRow(Record):
    """One sample's full trail: what was asked, generated, parsed and scored."""

    task: str
    task_version: str
    sample: Sample
    prompt_hash: str
    generation: Generation
    answer: Answer
    scores: dict[str, float] = Field(default_factory=dict)
    judgements: tuple[dict[str, Any], ...] = ()

    @field_validator("scores", mode="before")
    @classmethod
    def _nan_safe(cls, v: dict[str, Any]) -> dict[str, float]:
        return {k: (math.nan if x is None else float(x)) for k, x in v.items()}

    @property
    def sample_id(self) -> str:
        return self.sample.id


class Judgement(Record):
    """One judge's verdict on one sample's answer (judgements/<task>.jsonl). `value is None` = unscored:
    `failed` when the judge's reply was no well-formed verdict (or the call failed), else nothing to judge."""

    task: str
    sample_id: str
    judge: str  # the panel member's name
    spec: str  # the judge spec, e.g. rarl_v1
    prompt_hash: str  # of the spec's versioned prompt file
    model: str  # the judge backend's fingerprint
    model_version: str | None = None  # what the provider says answered, where it says
    settings: GenerationSettings
    prediction_hash: str  # of the text under judgement
    values: dict[str, float] = Field(default_factory=dict)  # every verdict field
    value: float | None = None  # the spec's primary field
    failed: bool = False  # judge_failed: never read as 0 or 1
    rationale: str | None = None
    raw: str = ""  # the judge's reply, verbatim
    note: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached: bool = False


class MetricSummary(Record):
    value: float
    stderr: float | None = None
    n: int
    n_unparsed: int
    higher_is_better: bool = True


class TaskSummary(Record):
    """A task's aggregate scores under one convention, with per-group breakdowns."""

    task: str
    task_version: str
    convention: str
    n: int
    n_unparsed: int
    n_errors: int = 0
    metrics: dict[str, MetricSummary]
    groups: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)

    def to_score_json(self) -> dict[str, Any]:
        """The `medharness score --json` shape."""
        return {
            "task": self.task,
            "convention": self.convention,
            "metrics": {k: {"value": m.value, "n": m.n, "n_unparsed": m.n_unparsed} for k, m in self.metrics.items()},
            "groups": self.groups,
        }
