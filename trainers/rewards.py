"""Rewards are metrics: each reward component is a registered metric scored through the task's own `Recipe`
(the parser of the prompt variant + `MetricSpec.score`), exactly the path `medharness run` scores with, and
named by it: a component is called by the column under which the variant records the same metric and
arguments (`component_label`), so a reward and the run's number of one name never differ.

A `RewardSet` parses each completion once and scores every component; its `functions()` are TRL reward
callables (keyword arguments, one float or `None` per completion: `None` = the metric does not apply or an
unscored judge verdict, never a silent 0). A component whose metric has a `batch` form (a judge panel,
`judge_score`) becomes an `async` TRL reward that scores the whole batch in a worker thread, so its calls run
while TRL computes the others. Each batch of completions is appended to `completions.jsonl` with its parsed
answer and every component, once all components have scored it. A reward argument `@model` (e.g. a length
reward's `tokenizer`) means the model being trained; in training, `length_reward` with `tokenizer: '@model'`
counts the token ids the policy generated (TRL's `completion_ids`), not a re-tokenisation of the decoded text.

A component that is `None` is left out of the completion's total, and the weights are renormalised over the
components present (`total`): sum(w_k v_k, present) x sum(|w_k|, all) / sum(|w_k|, present), None when none
is present. TRL 1.16 would `nansum` a partial None as 0, so under `sum_then_normalize` (the presets) TRL is
handed one more function, `total`, that returns this value with weight 1 while every component keeps its own
function with weight 0 (logged as `rewards/<label>/mean`, out of the sum); under `normalize_then_sum` TRL
centres each component in its group first, so a missing one already counts as the group's mean and the
components keep their own weights (`trl_weights`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Generation, Sample
from medharness.scoring.metrics import MetricSpec, resolve_metrics
from medharness.scoring.recipe import Recipe
from medharness.taskfiles.task import Task, recipe_for
from medharness.trainers.schema import RewardSpec

log = logging.getLogger(__name__)
TOTAL = "total"  # the combined reward function's name (TRL logs rewards/total/mean)
ID_COUNTED = {"length_reward"}  # with tokenizer '@model', counted on TRL's completion_ids in training


def default_rewards(task: Task, prompt: str) -> list[RewardSpec]:
    """The task's primary metric, plus format compliance where the prompt variant has a format (0.9 / 0.1)."""
    recipe = recipe_for(task, prompt=prompt)
    primary = recipe.sample_primary
    if primary is None:
        raise ConfigError(f"task {task.name}: no per-sample metric to reward; give `rewards:` explicitly")
    fmt = next((s for s in recipe.metrics if s.metric.name == "format_compliance"), None)
    first = RewardSpec(metric=primary.metric.name, args=primary.args, weight=0.9 if fmt else 1.0)
    if fmt is None:
        return [first]
    return [first, RewardSpec(metric="format_compliance", args=fmt.args, weight=0.1)]


def component_label(spec: RewardSpec, recorded: Sequence[MetricSpec]) -> str:
    """A reward component's name, so that the reward and the run's column of one name are one number: the
    label under which the prompt variant records the same metric with the same arguments; else the metric's
    name, or `metric(arg=value, ...)` where the variant records that metric with other arguments, or another
    metric under its name. An `as:` label is kept unless the variant records a different metric or arguments
    under it (a reward must not borrow a column)."""
    same = [m.label for m in recorded if m.metric.name == spec.metric and m.args == spec.args]
    if spec.label is not None:
        clash = next((m for m in recorded if m.label == spec.label), None)
        if clash is not None and spec.label not in same:
            raise ConfigError(f"reward label '{spec.label}' ({spec.metric} {spec.args or ''}) is the run's "
                              f"column for {clash.metric.name} {clash.args or ''}; name the component "
                              "another way")
        return spec.label
    if same:
        return same[0]
    if spec.metric not in {m.label for m in recorded} | {m.metric.name for m in recorded}:
        return spec.metric
    return f"{spec.metric}({', '.join(f'{k}={v}' for k, v in sorted(spec.args.items()))})"


def parse_rewards(value: Any, what: str = "rewards") -> list[RewardSpec]:
    """A reward list from YAML data: `[{metric, weight, args, as}]` or bare metric names. `what`: the setting
    that gave it, named by the errors (one line each, as `train`'s config errors are)."""
    items = value if isinstance(value, list) else [value]
    if not items:  # it would fall back to the default rewards in silence
        raise ConfigError(f"{what}: an empty reward list; give at least one component (or leave it out for "
                          "the default rewards)")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"metric": item}
        try:
            out.append(RewardSpec.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in (i, *err["loc"]))
            name = item.get("metric") if isinstance(item, dict) else None
            metric = f" ({name})" if isinstance(name, str) else ""
            got = f", got {err['input']!r}" if not isinstance(err["input"], dict | list) else ""
            raise ConfigError(f"{what}: rewards.{loc}{metric}: {err['msg']}{got}") from None
    return out


def completion_text(completion: Any) -> str:
    """TRL's completion (a string, or conversational `[{"role": "assistant", "content": ...}]`) as text."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "")
        parts.append(content if isinstance(content, str) else
                     "".join(p.get("text") or "" for p in content if isinstance(p, dict)))
    return "".join(parts)


class RewardSet:
    """The reward components of one training run, scored through the task's `Recipe`."""

    def __init__(self, task: Task, prompt: str, specs: Sequence[RewardSpec], samples: Sequence[Sample],
                 completions_file: Path | None = None, model: str | None = None) -> None:
        if not specs:
            raise ConfigError("rewards: give at least one reward metric")
        base = recipe_for(task, prompt=prompt)
        metrics = resolve_metrics([{"name": s.metric, "args": resolve_model_args(s.args, model, s.metric),
                                    "as": component_label(s, base.metrics)} for s in specs])
        for spec in metrics:
            if spec.metric.fn is None:
                raise ConfigError(f"reward '{spec.label}': corpus metric {spec.metric.name} has no "
                                  "per-sample value, so it cannot be a reward")
        self.task, self.prompt = task, prompt
        # components scored on the generated ids in training: label -> (scale, cap)
        self.id_counted = {m.label: (float(s.args.get("scale", 0.001)), float(s.args.get("cap", 1.0)))
                           for s, m in zip(specs, metrics, strict=True)
                           if s.metric in ID_COUNTED and s.args.get("tokenizer") == "@model"}
        self.by_ids = {m.label: m for m in metrics if m.label in self.id_counted}
        self.recipe = Recipe(base.convention, base.parser,
                             [m for m in metrics if m.metric.batch is None and m.label not in self.by_ids])
        self.batched = {m.label: m for m in metrics if m.metric.batch is not None}
        self.labels = [m.label for m in metrics]
        if TOTAL in self.labels:
            raise ConfigError(f"reward label '{TOTAL}' is the combined reward's name; name the component "
                              "another way (`as:`)")
        self.weights = [float(s.weight) for s in specs]
        self.specs = list(specs)
        self.aggregation = "sum_then_normalize"  # TRL's multi_objective_aggregation (set by the recipe)
        self.samples = {s.id: s for s in samples}
        self.completions_file = completions_file
        self._last_key: tuple[Any, ...] | None = None
        self._last: list[tuple[Answer, dict[str, float | None]]] = []
        self._reported: set[str] = set()  # components that have scored the current batch
        self._pending: dict[str, Future[list[float | None]]] = {}  # batched components of the current batch
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reward-batch")
        self._lock = threading.Lock()

    # -- scoring ------------------------------------------------------------------------------------------

    def score(self, sample: Sample, text: str) -> tuple[Answer, dict[str, float | None]]:
        """One completion: the parsed answer and every component (None where the metric does not apply)."""
        answer, comps = self._score_plain(sample, text)
        for label, spec in self.batched.items():
            comps[label] = spec.score(answer, sample, text)
        return answer, {label: comps.get(label) for label in self.labels}

    def _score_plain(self, sample: Sample, text: str,
                     n_ids: int | None = None) -> tuple[Answer, dict[str, float | None]]:
        """The parsed answer and the components without a batch form (the batched ones are None here); the
        id-counted ones on `n_ids` generated ids when given, else through their metric (re-tokenising)."""
        answer, scored = self.recipe.score(sample, Generation(sample_id=sample.id, text=text))
        scores: dict[str, float | None] = dict(scored)
        for label, spec in self.by_ids.items():
            scale, cap = self.id_counted[label]
            scores[label] = spec.score(answer, sample, text) if n_ids is None else min(scale * n_ids, cap)
        return answer, {label: None if label in self.batched else scores.get(label) for label in self.labels}

    def total(self, components: Mapping[str, float | None]) -> float | None:
        """The reward TRL optimises: the weighted sum of the components present, the weights renormalised over
        them (sum |w| of all / sum |w| of those present); None when no weighted component is present."""
        present = [(w, v) for w, lab in zip(self.weights, self.labels, strict=True)
                   if (v := components[lab]) is not None]
        mass = sum(abs(w) for w, _ in present)
        if not present or mass == 0:
            return None
        return sum(w * v for w, v in present) * sum(abs(w) for w in self.weights) / mass

    @property
    def combined(self) -> bool:
        """Whether TRL gets the `total` function (sum_then_normalize) besides the zero-weight components."""
        return self.aggregation == "sum_then_normalize"

    def trl_weights(self) -> list[float]:
        """TRL's `reward_weights`, one per function of `functions()`."""
        return [0.0] * len(self.labels) + [1.0] if self.combined else list(self.weights)

    def _batch(self, sample_ids: Sequence[str], texts: Sequence[str], step: int | None,
               ids: Sequence[Sequence[int]] | None = None) -> list[Any]:
        """The batch's answers and plain components, computed once for all the reward functions; with TRL's
        `completion_ids`, the id-counted components count the generated ids."""
        key = (tuple(sample_ids), tuple(texts), step)
        if key != self._last_key:
            self._last_key, self._reported, self._pending = key, set(), {}
            counts = [len(g) for g in ids] if ids is not None else [None] * len(texts)
            self._last = [self._score_plain(self._sample(i), t, n)
                          for i, t, n in zip(sample_ids, texts, counts, strict=True)]
        return self._last

    def _report(self, label: str, sample_ids: Sequence[str], texts: Sequence[str], step: int | None) -> None:
        """One component has scored the batch; when all have, the batch goes to completions.jsonl."""
        if label in self._reported:
            return
        self._reported.add(label)
        if self._reported == set(self.labels):
            self._write(sample_ids, texts, step)

    def _sample(self, sample_id: str) -> Sample:
        if sample_id not in self.samples:
            raise KeyError(f"reward: unknown training sample id {sample_id!r}")
        return self.samples[sample_id]

    def _write(self, sample_ids: Sequence[str], texts: Sequence[str], step: int | None) -> None:
        if self.completions_file is None:
            return
        with self.completions_file.open("a", encoding="utf-8") as fh:
            for sid, text, (answer, comps) in zip(sample_ids, texts, self._last):
                row = {"step": step, "sample_id": sid, "text": text, "answer": answer.value,
                       "parsed": answer.value is not None, "rewards": comps, "total": self.total(comps)}
                fh.write(json.dumps(row, default=str) + "\n")

    # -- TRL reward callables -----------------------------------------------------------------------------

    def functions(self) -> list[Callable[..., Any]]:
        """One TRL reward function per component, named after its label (TRL logs `rewards/<label>/mean`),
        then (`combined`) the `total` function; weights: `trl_weights()`."""
        fns = [self._function(label) for label in self.labels]
        return [*fns, self._total_function()] if self.combined else fns

    def _plain(self, completions: Sequence[Any], sample_id: Sequence[str], trainer_state: Any,
               completion_ids: Sequence[Sequence[int]] | None) -> tuple[list[str], int | None, list[Any]]:
        step = None if trainer_state is None else int(trainer_state.global_step) + 1
        texts = [completion_text(c) for c in completions]
        with self._lock:
            return texts, step, self._batch(sample_id, texts, step, completion_ids)

    def _batched(self, label: str, sample_ids: Sequence[str], texts: Sequence[str],
                 step: int | None) -> Future[list[float | None]]:
        """The batched component's values for the current batch, computed once (a worker thread) whichever
        function asks first; stored into the batch's components when done."""
        spec = self.batched[label]
        assert spec.metric.batch is not None
        batch = spec.metric.batch
        with self._lock:
            rows = self._batch(sample_ids, texts, step)
            if label not in self._pending:
                items = [(a, self._sample(i), t)
                         for (a, _), i, t in zip(rows, sample_ids, texts, strict=True)]

                def run() -> list[float | None]:
                    values = list(batch(items, **spec.args))
                    with self._lock:
                        for (_, comps), value in zip(rows, values, strict=True):
                            comps[label] = value
                    return values

                self._pending[label] = self._pool.submit(run)
            return self._pending[label]

    def _function(self, label: str) -> Callable[..., Any]:
        if label in self.batched:
            return self._async_function(label)

        def reward(completions: Sequence[Any], sample_id: Sequence[str], trainer_state: Any = None,
                   completion_ids: Sequence[Sequence[int]] | None = None, **_: Any) -> list[float | None]:
            texts, step, rows = self._plain(completions, sample_id, trainer_state, completion_ids)
            with self._lock:
                values = [comps[label] for _, comps in rows]
                self._report(label, sample_id, texts, step)
            return values

        reward.__name__ = label
        reward.__qualname__ = f"reward_{label}"
        return reward

    def _async_function(self, label: str) -> Callable[..., Any]:
        async def reward(completions: Sequence[Any], sample_id: Sequence[str], trainer_state: Any = None,
                         completion_ids: Sequence[Sequence[int]] | None = None,
                         **_: Any) -> list[float | None]:
            texts, step, _rows = self._plain(completions, sample_id, trainer_state, completion_ids)
            values = await asyncio.wrap_future(self._batched(label, sample_id, texts, step))
            with self._lock:
                self._report(label, sample_id, texts, step)
            return values

        reward.__name__ = label
        reward.__qualname__ = f"reward_{label}"
        return reward

    def _total_function(self) -> Callable[..., Any]:
        """The reward TRL sums (weight 1): `total` over every component, the batched ones awaited first."""
        if not self.batched:
            def reward(completions: Sequence[Any], sample_id: Sequence[str], trainer_state: Any = None,
                       completion_ids: Sequence[Sequence[int]] | None = None, **_: Any) -> list[float | None]:
                rows = self._plain(completions, sample_id, trainer_state, completion_ids)[2]
                with self._lock:
                    return [self.total(comps) for _, comps in rows]
        else:
            async def reward(completions: Sequence[Any], sample_id: Sequence[str],  # type: ignore[misc]
                             trainer_state: Any = None, completion_ids: Sequence[Sequence[int]] | None = None,
                             **_: Any) -> list[float | None]:
                texts, step, rows = self._plain(completions, sample_id, trainer_state, completion_ids)
                futures = [self._batched(label, sample_id, texts, step) for label in self.batched]
                await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
                with self._lock:
                    return [self.total(comps) for _, comps in rows]

        reward.__name__ = TOTAL
        reward.__qualname__ = f"reward_{TOTAL}"
        return reward

    # -- pre-flight ---------------------------------------------------------------------------------------

    def check_applicable(self, samples: Sequence[Sample],
                         gold: Callable[[Sample], str]) -> dict[str, float | None]:
        """Score each sample's gold answer (written in the variant's format) through every component; a
        component that gives no value for any sample does not apply to this task's answers: refuse it.
        Returns each component's mean on the gold answers (the best a policy can expect)."""
        values: dict[str, list[float]] = {label: [] for label in self.labels if label not in self.batched}
        for sample in samples:
            _, comps = self._score_plain(sample, gold(sample))
            for label, got in values.items():
                if (value := comps[label]) is not None:
                    got.append(value)
        dead = [label for label, got in values.items() if not got]
        if dead:
            raise ConfigError(
                f"reward metric(s) {', '.join(dead)} do not apply to task {self.task.name} (prompt "
                f"'{self.prompt}'): they give no score for the gold answer of any of {len(samples)} training "
                "samples. Choose a metric for this task's answers (see `medharness ls metrics`).")
        # a judge-backed component is not called on the gold answers (paid calls): its mean stays unknown
        means: dict[str, float | None] = {label: None for label in self.labels}
        means.update({label: sum(got) / len(got) for label, got in values.items()})
        return means


def resolve_model_args(args: dict[str, Any], model: str | None, metric: str) -> dict[str, Any]:
    """Reward arguments with `@model` replaced by the model being trained (e.g. a length reward's
    tokenizer)."""
    if "@model" not in args.values():
        return dict(args)
    if model is None:
        raise ConfigError(f"reward {metric}: an argument is '@model', which needs the training model "
                          "(--model)")
    return {k: model if v == "@model" else v for k, v in args.items()}
