"""The plain records that flow through medharness. Read this module first.

Sample --render--> Prompt --Backend.generate--> Generation --Parser--> Answer --Metric--> scores
ResultRow (one per sample: samples/<task>.jsonl); TaskSummary; the run log (run.json): RunLog of TaskEntry.

All records are frozen pydantic models that round-trip through JSON. Images are referenced
(a path relative to the data root, or a `scheme:...` reference a data source resolves), never
held as decoded pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import NotRequired, TypedDict


class Strict(BaseModel):
    """The one strict base: frozen, and an unknown key is an error (records, task, recipe, sweep and board
    files, sources, panels). A field with an alias (`as:`, `from:`) also takes its own name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_safe_name(value: str, what: str = "name") -> str:
    """`value` if it can be used as a file name as it is (no separators, not `.`/`..`, not empty, <= 128
    characters), else ValueError. Every name that becomes a file or folder name is checked with this."""
    if not SAFE_NAME.fullmatch(value):
        shown = repr(value if len(value) <= 60 else value[:60] + "...")
        raise ValueError(f"{what} {shown} cannot be used as a file name: use 1 to 128 letters, digits, '.', "
                         "'_' or '-', starting with a letter or digit")
    return value


def _safe_field(value: str, info: ValidationInfo) -> str:
    return check_safe_name(value, info.field_name or "name")


SafeName = Annotated[str, AfterValidator(_safe_field)]
"""A name that becomes a file name (task, judge, run label, recipe, preset): validated by the schema that
reads it, so a bad one is refused with the file and line before anything is written."""


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


class EvalSettings(Strict):
    """How a model is evaluated: what a sweep's `eval:` (`EvalSpec`) and `train --eval-*` (`EvalRequest`)
    share with `run` (`RunSettings`, which keeps its own field order: run.json stores it)."""

    backend: str = Field("auto", description="the run backend; auto: vllm on a GPU when installed, hf "
                                             "elsewhere")
    limit: int | None = Field(None, ge=1, description="the first N samples per task")
    batch_size: int = Field(8, ge=1, description="samples per backend call")
    max_new_tokens: int | None = Field(None, ge=1, description="the generation length; null: each task's own")
    backend_options: dict[str, Any] = Field(default_factory=dict,
                                            description="backend options, as run --backend-option KEY=VALUE")


class GenerationSettings(Record):
    """Decoding settings; task files' `generation:` keys are these fields, checked when the file is read."""

    max_new_tokens: int = Field(128, ge=1, description="the most tokens generated per answer")
    temperature: float = Field(0.0, ge=0, allow_inf_nan=False, description="0 = greedy; > 0 samples")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the probability mass sampled from")
    seed: int = Field(0, description="the sampling seed")

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
    # the exact model the provider says answered (e.g. gpt-4o-mini-2024-07-18)
    model_version: str | None = None
    error: str | None = None

    @field_validator("text", "error", "model_version")
    @classmethod
    def _writable(cls, value: str | None) -> str | None:
        """A lone surrogate (a server's `"\\ud800"` JSON escape) becomes U+FFFD: no UTF-8 file can hold it, so
        the row could not be written and the run would stop."""
        return _LONE_SURROGATE.sub("\ufffd", value) if value and _LONE_SURROGATE.search(value) else value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Answer:
    """A parsed answer. `value is None` means unparseable: data, never an exception.

    A frozen dataclass rather than a pydantic model: parsers build one or two per generation, and re-scoring
    100k rows spent a third of its time constructing them; pydantic still validates it strictly wherever a row
    is read (it is a field of `ResultRow`)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    value: Any = None
    parser: str = ""
    note: str = ""

    @property
    def parsed(self) -> bool:
        return self.value is not None


class ResultRow(Record):
    """One sample's full trail: what was asked, generated, parsed and scored."""

    task: str
    task_version: str
    sample: Sample
    prompt_hash: str
    generation: Generation
    answer: Answer
    scores: dict[str, float] = Field(default_factory=dict)  # metric label -> value; NaN = unscored

    # Rows written by 0.1 carry an always-empty `judgements` list (verdicts live in judgements/): still read,
    # never written. A type, not a Python validator, so reading rows stays in pydantic-core.
    judgements: tuple[()] = Field(default=(), exclude=True)

    @field_validator("scores", mode="before")
    @classmethod
    def _nan_safe(cls, v: dict[str, Any]) -> dict[str, float]:
        return {k: (math.nan if x is None else float(x)) for k, x in v.items()}

    @property
    def sample_id(self) -> str:
        return self.sample.id


def fields_of(model: type[BaseModel]) -> Any:
    """A TypedDict of `model`'s fields (the same types and constraints; fields with a default may be absent;
    unknown keys refused): validates a JSON object exactly as `model` would, without building the model.
    Derived from the model, so the two cannot drift apart."""
    fields: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        kind: Any = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[name] = kind if f.is_required() else NotRequired[kind]
    view = _typed_dict(f"{model.__name__}Fields", fields)
    view.__pydantic_config__ = ConfigDict(extra="forbid")
    return view


_typed_dict: Any = TypedDict  # built from fields at run time, which static type checkers cannot follow

RowToScore: Any = _typed_dict("RowToScore", {
    "task_version": str, "sample": fields_of(Sample), "generation": fields_of(Generation)})
RowToScore.__pydantic_config__ = ConfigDict(extra="ignore")
RowToScore.__doc__ = """What re-scoring reads of a `ResultRow` line: its task version, sample and generation,
validated as strictly as `ResultRow` validates them (`fields_of`) but left as dicts, since re-scoring builds a
`Sample` only for the rows it parses (`scoring.DistinctScores`). The answer and scores that re-scoring
replaces, and the other top-level keys, are skipped unread."""


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


def _nan_for_none(v: Any) -> Any:
    return math.nan if v is None else v


class MetricSummary(Record):
    """A metric over a task's samples (or one group of them): the value with its interval.

    `ci_low`/`ci_high` is the 95% interval made by `ci_method` (medharness.core.stats: "wilson",
    "bootstrap-percentile" clustered by the task's `cluster_by`, "wilson-clusters"), over `n_clusters`
    independent units. Absent (None) in run logs written before intervals were recorded, and where no
    interval exists (no scored sample). `n_unparsed` is None only in group entries of such old run logs."""

    value: float  # NaN: no sample was scored (written as null in run.json)
    stderr: float | None = None  # i.i.d. standard error, kept for comparison with papers that print it
    ci_low: float | None = None
    ci_high: float | None = None
    n_clusters: int | None = None
    ci_method: str | None = None
    n: int
    n_unparsed: int | None
    n_errors: int = 0  # of the unparsed, the generations that failed (no answer at all)
    higher_is_better: bool = True

    _value = field_validator("value", mode="before")(_nan_for_none)


class GroupSummary(Record):
    """One group of a task's samples (e.g. answer_type = CLOSED): its size and its metrics."""

    n: int
    n_unparsed: int | None = None  # None: not recorded (run logs before intervals)
    metrics: dict[str, MetricSummary]

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, v: Any) -> Any:
        """Run logs before intervals kept a group as {"n": 272.0, "<metric>": value}."""
        if not isinstance(v, dict) or "metrics" in v or not isinstance(v.get("n"), (int, float)):
            return v
        n = int(v["n"])
        return {"n": n, "metrics": {m: {"value": _nan_for_none(x), "n": n, "n_unparsed": None}
                                    for m, x in v.items() if m != "n"}}


class TaskSummary(Record):
    """A task's aggregate scores under one convention, with per-group breakdowns."""

    task: str
    task_version: str
    convention: str
    n: int
    n_unparsed: int
    n_errors: int = 0
    n_expected: int | None = None  # the samples the task selected: n < n_expected is a partial result
    metrics: dict[str, MetricSummary]
    groups: dict[str, dict[str, GroupSummary]] = Field(default_factory=dict)  # field -> value -> group

    @property
    def primary(self) -> str | None:
        """The task's primary metric: the first one its recipe lists (`Recipe.primary`; a summary keeps the
        recipe's order), corpus metrics included (QWK for a grading task)."""
        return next(iter(self.metrics), None)

    def to_score_json(self, percent: dict[str, bool] | None = None) -> dict[str, Any]:
        """The `medharness score --json` shape: values are fractions as in run.json (the console shows
        `percent` metrics x100); every metric entry, headline or group, has the same keys."""

        def metrics(ms: dict[str, MetricSummary]) -> dict[str, Any]:
            return {k: {**m.model_dump(), "percent": (percent or {}).get(k, True)} for k, m in ms.items()}

        return {
            "task": self.task, "task_version": self.task_version, "convention": self.convention,
            "n": self.n, "n_expected": self.n_expected, "n_unparsed": self.n_unparsed,
            "n_errors": self.n_errors,
            "metrics": metrics(self.metrics),
            "groups": {f: {k: {"n": g.n, "n_unparsed": g.n_unparsed, "metrics": metrics(g.metrics)}
                           for k, g in b.items()} for f, b in self.groups.items()},
        }


# ---------------------------------------------------------------------------------------------- the run log

RUNLOG_SCHEMA = 1
RunStatus = Literal["running", "finished", "failed", "interrupted"]


class MetricSpecRecord(Record):
    """A metric exactly as it was applied: registered name, the arguments, and its column label."""

    label: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    higher_is_better: bool = True
    percent: bool = True


class TokenCount(Record):
    prompt: int = 0
    completion: int = 0


class JudgeColumn(Record):
    """One judge (or panel aggregate) column of a task: mean verdict over the samples it scored."""

    value: float | None
    stderr: float | None = None
    ci_low: float | None = None  # the interval, as for MetricSummary (None in run logs before intervals)
    ci_high: float | None = None
    n_clusters: int | None = None
    ci_method: str | None = None
    n: int
    n_unscored: int
    n_failed: int = 0
    percent: bool
    primary: bool = False


class TaskJudges(Record):
    columns: dict[str, JudgeColumn] = Field(default_factory=dict)
    judges: list[str] = Field(default_factory=list)


class AnswerSource(Record):
    """Where a baseline's answers for one task came from; boards show `oracle` on the row.

    `train`: the task's train split; `prior`: the task card's declared prior (the train split's statistics);
    `oracle`: the evaluated split's own golds, an ORACLE floor (it has seen the answers it is scored on; no
    model could), used only where neither of the others exists; `constant`: the text the user gave."""

    kind: Literal["train", "prior", "oracle", "constant"]
    detail: str


class PeerOrigin(Record):
    """Rows that another evaluation tool generated (`medharness import`, `run --tasks lm_eval:...`): which
    tool, which file, which model, and how the file's rows matched the task's samples."""

    tool: str  # lm-eval | lmms-eval | vlmevalkit
    tool_version: str | None = None  # None: the file does not say and none was given
    file: str
    sha256: str  # of the file as read
    model: str  # the model the peer ran, as the peer names it
    id_mapping: str  # how the file's rows were matched to sample ids (e.g. "doc.id", "index via ids.tsv")
    n_rows: int  # rows in the file
    n_matched: int
    n_unmatched: int  # rows of the file that match no sample of the task (left out)
    n_task_samples: int  # samples of the task; those with no row in the file are not in the run
    # "medharness": rows re-scored here; or the peer's own metric (not re-scorable)
    scored_by: str = "medharness"


class TaskEntry(Record):
    """One task of a run: how it was scored (version, prompt, convention, metrics with their arguments) and
    what came out (summary, tokens, cost, judge columns)."""

    version: str
    prompt: str | None = None
    convention: str
    ablation: str | None = None
    parser: str = ""
    group_by: list[str] = Field(default_factory=list)
    cluster_by: str | None = None  # what the summary's intervals resample (None: run logs before intervals)
    data: dict[str, Any] = Field(default_factory=dict)  # the data source's load report
    n_selected: int = 0
    percent: dict[str, bool] = Field(default_factory=dict)  # metric label -> shown x100
    metrics: list[MetricSpecRecord] = Field(default_factory=list)
    path: str = ""
    # hash of the resolved task definition (`Task.definition_hash`): resume checks it
    definition: str | None = None
    summary: TaskSummary | None = None
    tokens: TokenCount | None = None
    cost_usd: float | None = None
    judges: TaskJudges | None = None
    baseline: AnswerSource | None = None  # a baseline run: where its answers came from
    origin: PeerOrigin | None = None  # rows from another tool (None: generated by this run)


class CacheUsage(Record):
    hits: int
    misses: int
    path: str


class RunUsage(Record):
    model_calls: int = 0
    generate_s: float = 0.0  # wall time spent generating (cache lookups included, model loading not)
    cache: CacheUsage | None = None


class JudgeUsage(Record):
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None


class PanelMember(Strict):
    """One judge of a panel: a spec on a model behind a backend (the key's variable name, never the key)."""

    name: SafeName  # a column and file key
    spec: str
    backend: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class JudgeEntry(PanelMember):
    """A panel member as the run log keeps it: the member, its model's fingerprint, the spec's version and
    prompt hash, its decoding settings, the model versions that answered, and its bill."""

    fingerprint: str
    spec_version: str
    prompt_hash: str
    settings: GenerationSettings
    model_versions: list[str] = Field(default_factory=list)
    usage: JudgeUsage = JudgeUsage()


class TrainedFrom(Record):
    """A run's lineage: which training produced the evaluated checkpoint (`known=False`: no manifest)."""

    checkpoint: str
    known: bool
    base_model: str | None = None
    recipe: str | None = None
    preset: str | None = None
    task: str | None = None
    step: int | None = None
    seed: int | None = None
    adapter: bool = False
    manifest_hash: str | None = None
    parent: str | None = None  # parent checkpoint's manifest hash
    parent_run: str | None = None  # a run directory this lineage continues, where known


class RunTarget(Strict):
    """What every run's `config` in run.json starts with, in this order: the model, the backend that answered,
    the tasks (names or files, comma-separated), their data root and per-task overrides."""

    model: str = Field(description="checkpoint folder or hub id; baseline:majority|random|constant:TEXT; a "
                                   "predictions file")
    backend: str = Field(
        "auto",
        description="auto (baseline: prefix -> baseline, predictions file -> replay, vllm when installed "
                    "and a GPU is present, else hf), hf, vllm, openai, gemini, replay, baseline")
    tasks: str = Field(description="comma-separated task names, families or task YAML paths")
    data_dir: str | None = Field(None, description="folder holding the local copy of the dataset (for every "
                                                   "task)")
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-task settings, task -> {key: value} (-T TASK.KEY=VALUE, e.g. "
                                          "-T vqa_rad.prompt=r1)")

    def result_settings(self) -> dict[str, Any]:
        """The settings that decide the results (`RunSettings.RESULT_KEYS`; None for those this kind of run
        lacks): a run resumes, and `train --eval-every` reuses an evaluation, only where they are equal."""
        return {key: getattr(self, key, None) for key in RunSettings.RESULT_KEYS}


class RunSettings(RunTarget):
    """The `config` of a run that generated its answers (`medharness run`), keys in this order. The types
    only: the ranges (`--limit` >= 1, ...) and the backend's options are checked where settings are made
    (`runs.pipeline.RunConfig`: these fields with their checks), so a run.json written before a check
    existed still loads."""

    limit: int | None = Field(None, description="only the first N samples of each task (default: every "
                                                "sample)")
    batch_size: int = Field(8, description="samples per backend call")
    max_new_tokens: int | None = Field(
        None, description="override the task's generation length (default: the task's own)")
    temperature: float | None = Field(None, description="0 = greedy; > 0 samples with the seed (default: the "
                                                        "task's own, greedy unless its file sets one)")
    seed: int = Field(0, description="seed for sampling and random baselines")
    backend_options: dict[str, Any] = Field(
        default_factory=dict, description="any backend option, e.g. vllm: max_model_len=1024 "
                                          "enforce_eager=true lora=ADAPTER_DIR")
    max_error_rate: float = Field(
        0.5, description="fail when more than this share of a task's generations fails (checked from 20 "
                         "samples on, and at each task's end whatever its size)")
    ablate: str | None = Field(None, description="replace every image (blank, noise, or another sample's: "
                                                 "shuffle): is the model using the picture?")
    samples_file: str | None = Field(
        None, description="only these sample ids: JSON {task: [ids]} or [ids], text lines 'id' / "
                          "'task<TAB>id', or a folder of such JSON files (e.g. tasks/subsets: the pinned CI "
                          "subsets)")
    cache: bool = Field(True, description="reuse identical greedy generations from the response cache; "
                                          "false (--no-cache): always call the model")
    cache_dir: str | None = Field(None, description="response cache folder (default $MEDHARNESS_CACHE or "
                                                    "~/.cache/medharness)")
    label: str | None = Field(
        None, description="a human name for this run on leaderboards (default: the run id; not a result key)")

    RESULT_KEYS: ClassVar[tuple[str, ...]] = ("model", "backend", "tasks", "data_dir", "overrides", "limit",
                                              "max_new_tokens", "temperature", "seed", "ablate",
                                              "samples_file")


class ImportSettings(RunTarget):
    """The `config` of a run whose answers another tool generated (`medharness import`): `backend` is
    `import:<tool>`, `predictions` the file it read."""

    predictions: str


def _config_kind(value: Any) -> str:
    """An imported run's config names its predictions file; every other is a run's."""
    if isinstance(value, dict):
        return "import" if "predictions" in value else "run"
    return "import" if isinstance(value, ImportSettings) else "run"


RunLogConfig = Annotated[Annotated[RunSettings, Tag("run")] | Annotated[ImportSettings, Tag("import")],
                         Discriminator(_config_kind)]
"""run.json's `config`: a run's settings, or an import's (told apart by the `predictions` key)."""


class RunLog(Record):
    """`run.json`: one run's config, environment, status, lineage and per-task results. Only `runlog.py`
    reads and writes the file; everything else passes these records."""

    schema_version: int = RUNLOG_SCHEMA
    run_id: str
    label: str | None = None  # a human name for boards; the run id when absent
    status: RunStatus = "running"
    error: str | None = None
    created: str = ""
    updated: str = ""
    command: list[str] = Field(default_factory=list)
    config: RunLogConfig
    versions: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    model: str | None = None  # the backend's fingerprint
    attn_implementation: str | None = None  # the attention kernel a local model ran with
    trained_from: TrainedFrom | None = None
    origin: str | None = None  # where the rows came from when not generated here (e.g. an imported file)
    tasks: dict[str, TaskEntry] = Field(default_factory=dict)
    usage: RunUsage | None = None
    judges: dict[str, JudgeEntry] = Field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return self.label or self.run_id


class TrainAttempt(Record):
    """An earlier attempt of a resumed training run, as `TrainLog.previous` keeps it."""

    status: RunStatus | None = None
    started: str | None = None
    finished: str | None = None
    steps: int | None = None
    error: str | None = None


class TrainLog(Record):
    """`train.json` of a `medharness train --output` folder: what was trained, how, and how it ended.
    `trainers/run.py` writes it (only the fields it set), `runs/folders.py` reads it."""

    status: RunStatus
    recipe: str | None = None
    presets: list[str] = Field(default_factory=list)
    task: str | None = None
    prompt: str | None = None
    model: str | None = None  # the model training started from
    seed: int | None = None
    output: str | None = None
    n_train_samples: int | None = None
    # the resolved recipe config (TrainConfig, trl settings)
    config: dict[str, Any] = Field(default_factory=dict)
    batch: dict[str, Any] | None = None  # batch sizes in prompts and in completions
    rewards: list[dict[str, Any]] | None = None  # label, metric, args, weight, gold_mean per component
    prompt_styles: dict[str, int] | None = None  # RARL: samples per prompt style
    resumed_from: str | None = None  # the checkpoint a --resume continued from
    final: str | None = None  # the final model's folder once finished
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    steps: int | None = None
    error: str | None = None
    launch: dict[str, Any] | None = None  # how the process was started (accelerate, torchrun, plain)
    evals: dict[str, Any] | None = None  # `--eval-every`: its settings, points and curve (trainers/evals.py)
    trainable_tensors: int | None = None  # a frozen vision tower: how many tensors did train
    previous: list[TrainAttempt] = Field(default_factory=list)

    def attempt(self) -> TrainAttempt:
        return TrainAttempt(status=self.status, started=self.started, finished=self.finished,
                            steps=self.steps, error=self.error)


class LogRow(BaseModel):
    """A row of a training run's `logs.jsonl`: a logging step (TRL's own metrics under their own names, which
    TRL changes between versions, so they are kept as extra fields; `metric(name)` reads one) with what
    medharness adds, or a scored `--eval-every` point (`eval`, `model`, `run`). Not `Strict` for that reason:
    the known fields are typed, the rest is TRL's."""

    model_config = ConfigDict(extra="allow", frozen=True)

    step: int
    epoch: float | None = None
    time: str | None = None
    step_time: float | None = None  # seconds per optimiser step
    tokens_per_s: float | None = None
    peak_memory_gib: float | None = None
    reward_components: dict[str, dict[str, float | None]] | None = None  # label -> {mean, std}
    eval: dict[str, Any] | None = None  # task -> {metric, value, n}
    model: str | None = None
    run: str | None = None

    def metric(self, name: str) -> float | None:
        """One of TRL's logged numbers (`loss`, `reward`, `kl`, ...); None when absent or not a number."""
        value = (self.model_extra or {}).get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class SweepCellTrain(Record):
    dir: str
    status: RunStatus | None  # None: not started
    final: str | None


class TaskResult(Record):
    """A finished run's task as sweeps and curves show it (`runs.results.task_result`): one metric on the
    display scale (x100 for rates), the samples it counts, the run's model, whether it is an oracle
    baseline, and the interval with its method (None: no interval)."""

    metric: str
    value: float | None
    n: int
    model: str | None
    oracle: bool
    ci: tuple[float, float] | None
    ci_method: str | None


class SweepCellEval(Record):
    dir: str
    result: TaskResult | None  # None: no finished run


class SweepCell(Record):
    """One cell of a sweep as `sweep.json` records it: what it trains, where, and how far it got."""

    id: str
    recipe: str
    entry: str
    preset: str | None
    task: str
    shots: int | None
    seed: int
    parent: str | None
    stage: int
    train: SweepCellTrain
    eval: dict[str, SweepCellEval]
    finished: bool
    error: str | None


class SweepLog(Record):
    """`sweep.json` of a `medharness train-then-eval` folder: the resolved sweep, every cell, the board's rows
    and the paper table (`trainers/sweeps/cli.py` writes it, `runs/folders.SweepDir.log()` reads it)."""

    sweep_file: str
    output: str
    config: dict[str, Any]  # the sweep file as resolved (SweepConfig)
    cells: list[SweepCell]
    board: list[dict[str, Any]]  # the board's rows (trainers/sweeps/board.py)
    table: dict[str, Any] | None  # the paper table with its published rows, when the sweep has one
    failed: dict[str, str]  # cell id -> why


class CompletionRow(Record):
    """A row of a training run's `completions.jsonl`: one sampled completion, its parsed answer and each
    reward component (`total`: their weighted sum)."""

    step: int | None
    sample_id: str
    text: str
    answer: Any = None
    parsed: bool
    rewards: dict[str, float | None]
    total: float | None
