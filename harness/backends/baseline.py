"""`baseline:majority`, `baseline:random`, `baseline:constant:TEXT`: floors every model must beat.

`majority` answers, per answer type, the most frequent gold of the task's train split (or the task card's
declared `prior`, the train split's statistics); box targets get the mean train box. `random` draws, with the
run's seed, among the sample's options, else among the train golds of its answer type. Where neither a train
split nor a prior exists (a test-only copy of VQA-RAD or SLAKE), both draw from the evaluated split's own
golds instead: an ORACLE floor, recorded as such in the run log (`tasks.<task>.baseline.kind == "oracle"`) and
named on every board, never passed off as a train-split baseline.

Every answer is written in the format the task's prompt variant asks for (`medharness.taskfiles.answers`), so
it reaches the scorer as a model's answer in that format would: `\\boxed{pneumonia}`, `<answer>yes</answer>`,
`B`.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from medharness.backends.base import Backend, Request, backend
from medharness.core.errors import BackendError, DataError
from medharness.core.records import AnswerSource, Generation, Sample
from medharness.taskfiles.answers import format_answer

log = logging.getLogger(__name__)
MODES = ("majority", "random", "constant")


def _key(sample: Sample) -> str:
    return str(sample.meta.get("answer_type", "all"))


def _as_text(target: Any) -> str:
    return json.dumps(target) if isinstance(target, list) else str(target)


@backend("baseline")
class BaselineBackend(Backend):
    needs_images = False
    cacheable = False

    def __init__(self, model: str, seed: int = 0, **options: Any) -> None:
        super().__init__(model, **options)
        mode, _, arg = model.partition(":")
        if mode not in MODES:
            raise BackendError(f"unknown baseline '{model}': use majority, random or constant:TEXT")
        if mode == "constant" and not arg:
            raise BackendError("baseline:constant needs the text to answer, e.g. baseline:constant:yes")
        self.mode, self.constant, self.seed = mode, arg, seed
        self.answers: dict[str, Any] = {}
        self.pools: dict[str, list[str]] = {}
        self.samples: dict[str, Sample] = {}
        self.rng = random.Random(seed)
        self.task: Any = None
        self.sources: dict[str, AnswerSource] = {}

    @property
    def fingerprint(self) -> str:
        return f"baseline:{self.model}" + (f"@seed{self.seed}" if self.mode == "random" else "")

    def answer_source(self, task: str) -> AnswerSource | None:
        return self.sources.get(task)

    def prepare(self, task: Any, samples: Sequence[Sample]) -> None:
        self.task = task
        self.samples = {s.id: s for s in samples}
        self.rng = random.Random(f"{self.seed}:{task.name}")
        if self.mode == "constant":
            self.sources[task.name] = AnswerSource(kind="constant", detail=f"the text {self.constant!r}")
            return
        report = dict(task.load_report)
        try:
            train = task.load_samples("train")
        except DataError as exc:
            train = []
            log.info("task %s: no train split for the %s baseline (%s)", task.name, self.mode, exc)
        finally:
            task.load_report = report  # the report describes the evaluated split, not the train split
        if train:
            self._learn(train)
            source = AnswerSource(kind="train", detail=f"train split ({len(train)} samples)")
        elif task.config.card.prior:
            self.answers = dict(task.config.card.prior)
            self.pools = {k: [v] for k, v in self.answers.items()}
            source = AnswerSource(kind="prior", detail="the task card's prior (train-split statistics)")
        elif samples:
            self._learn(samples)
            split = task.config.split
            source = AnswerSource(kind="oracle", detail=(
                f"ORACLE floor: the golds of the evaluated {split} split itself ({len(samples)} samples), as "
                "no train split or card prior is available; not a baseline a model could know"))
            log.warning("task %s: no train split and no card prior: baseline:%s draws its answers from the "
                        "evaluated %s split's own golds, an oracle floor (labelled so in run.json and on "
                        "boards)",
                        task.name, self.mode, split)
        else:
            raise BackendError(f"baseline:{self.mode} for task {task.name} has no samples to answer")
        self.sources[task.name] = source

    def _learn(self, samples: Sequence[Sample]) -> None:
        by_key: dict[str, list[Any]] = {}
        for s in samples:
            by_key.setdefault(_key(s), []).append(s.target)
        self.answers = {k: _majority(v) for k, v in by_key.items()}
        self.pools = {k: sorted({_as_text(t) for t in v}) for k, v in by_key.items()}

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        return [Generation(sample_id=r.prompt.sample_id, text=self._answer(r.prompt.sample_id),
                           finish_reason="stop", model=self.fingerprint) for r in requests]

    def _answer(self, sample_id: str) -> str:
        """The answer value, written in the format of the task's prompt variant."""
        sample = self.samples.get(sample_id)
        value = self._value(sample)
        if sample is None or self.task is None:
            return _as_text(value)
        return format_answer(self.task, self.task.prompt_name, sample, value)

    def _value(self, sample: Sample | None) -> Any:
        if self.mode == "constant":
            return self.constant
        key = _key(sample) if sample else "all"
        if self.mode == "majority":
            return self.answers.get(key) or next(iter(self.answers.values()))
        if sample is not None and sample.choices:
            return self.rng.choice(list(sample.choices))
        pool = self.pools.get(key) or sorted({a for p in self.pools.values() for a in p})
        return self.rng.choice(pool)


def _is_box(t: Any) -> bool:
    return isinstance(t, list) and len(t) == 4 and all(isinstance(v, (int, float)) for v in t)


def _majority(targets: list[Any]) -> Any:
    """The most frequent gold (as text); for box targets (one box, or a list of boxes) the mean box."""
    boxes = [t for t in targets if _is_box(t)] or [b for t in targets if isinstance(t, list)
                                                   for b in t if _is_box(b)]
    if boxes and len(boxes) >= len(targets):
        return [round(sum(b[i] for b in boxes) / len(boxes), 1) for i in range(4)]
    counts = Counter(_as_text(t).strip().lower() if isinstance(t, str) else _as_text(t) for t in targets)
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
