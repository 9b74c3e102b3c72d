"""Train-then-eval sweeps: the strict sweep file schema and its expansion into cells.

A sweep file is a YAML grid: recipes x tasks x shots x seeds x presets. Each cell trains one checkpoint and
evaluates it on the sweep's eval tasks; the base model and the baselines are evaluated once as reference rows.
A recipe entry may train `from:` another entry (GRPO after SFT, multi-stage recipes): its cells start from
the parent cell's final checkpoint. Unknown keys are errors that name the file and line (as task files).
Running the cells: `stages.py`; the leaderboard: `board.py`; the command: `cli.py`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from medharness.core.errors import ConfigError
from medharness.core.records import EvalSettings, SafeName, Strict
from medharness.core.yamlio import load_strict

# a seed as `train --seed` takes it (TrainConfig.seed): the dry run checks one cell per entry, not each seed
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


def _as_list(value: Any) -> Any:
    """A scalar becomes a one-item list (and each value of a mapping)."""
    if isinstance(value, dict):
        return {k: _as_list(v) for k, v in value.items()}
    return [value] if isinstance(value, (str, int)) else value


# A prompt variant for every task, or per task ({medmnist_retina: names, covid_severity: r1}; a task it does
# not name uses its default variant).
Prompts = str | dict[str, str] | None


def pick(prompts: Prompts, task: str) -> str | None:
    """The variant `prompts` gives `task` (None: not given)."""
    return prompts.get(task) if isinstance(prompts, dict) else prompts


class RecipeEntry(Strict):
    """One recipe of the grid: `sft`, or `{recipe: grpo, from: sft, preset: grpo_lora, overrides: [...]}`."""

    recipe: str = Field(description="the training recipe (`medharness ls recipes`)")
    id: SafeName | None = Field(None, description="the entry's id in cell ids (default: the recipe, or "
                                                  "RECIPE-from-PARENT)")
    preset: str | None = Field(None, description="fixed preset(s), off the axis (\"a+b\" layers a then b); "
                                                 "null: the sweep's `presets` axis")
    config: str | None = Field(None, description="a recipe config YAML (`train --config`), relative to the "
                                                 "sweep file")
    overrides: list[str] = Field(default_factory=list, description="extra -C KEY=VALUE for this entry")
    parent: str | None = Field(
        None, alias="from",
        description="train from this entry's final checkpoint (same task, shots and seed): an entry listed "
                    "before")
    tasks: list[SafeName] | None = Field(None, description="this entry's training tasks (default: the "
                                                           "sweep's `tasks`)")
    prompt: Prompts = Field(
        None,
        description="this entry's prompt variant, training and evaluation (default: the sweep's)")
    eval_prompt: Prompts = Field(None, description="the prompt variant its evaluations use (default: its "
                                                   "`prompt`, then the sweep's)")

    _listify = field_validator("tasks", mode="before")(_as_list)

    @property
    def key(self) -> str:
        return self.id or (f"{self.recipe}-from-{self.parent}" if self.parent else self.recipe)


def ablation_folder(mode: str) -> str:
    """The eval subfolder of a cell's final model scored with `run --ablate MODE` (beside checkpoint-N)."""
    return f"ablate-{mode}"


class EvalSpec(EvalSettings):
    """A sweep's `eval:`: the shared evaluation settings, a pinned sample file, and which checkpoints."""

    samples: str | None = Field(None, description="a pinned sample id file (`run --samples`), relative to "
                                                  "the sweep file")
    checkpoints: Literal["final", "all"] = Field(
        "final", description="all: every checkpoint-<step> is scored too (the board uses final)")
    ablate: list[Literal["blank", "noise", "shuffle"]] = Field(
        default_factory=list, description="also score each trained cell's final model with `run --ablate "
                                          "MODE`: a board row `<row> · MODE image` under each trained row "
                                          "(is the picture used?)")
    per_class: int | dict[SafeName, int] | None = Field(
        None, description="score a seeded class-balanced subset of each eval task's split: k samples per "
                          "gold answer (fewer where a class has fewer), drawn by `medharness split` into "
                          "SWEEP/splits/ and given to every run (cells and reference rows) as `--samples`; "
                          "or per eval task {medmnist_oct: 64} (a task it does not name: the whole split); "
                          "null: the whole split")
    subset_seed: int = Field(0, ge=0, description="the seed of the `per_class` subset")

    @model_validator(mode="after")
    def _one_sample_choice(self) -> EvalSpec:
        counts = self.per_class.values() if isinstance(self.per_class, dict) else [self.per_class]
        if any(k is not None and k < 1 for k in counts):
            raise ValueError("per_class is k >= 1 samples per class")
        if self.per_class is not None and self.samples is not None:
            raise ValueError("samples (a pinned id file) and per_class (a seeded subset) both choose the "
                             "evaluated samples: give one")
        return self

    def subset_k(self, task: str) -> int | None:
        """The `per_class` k of an eval task (None: its whole split)."""
        return self.per_class.get(task) if isinstance(self.per_class, dict) else self.per_class


class LaunchSection(Strict):
    launcher: Literal["none", "accelerate"] = Field(
        "none", description="none: train in this process; accelerate: write the accelerate config into "
                            "OUTPUT/launch/ and run `accelerate launch`")
    num_processes: int = Field(1, ge=1, description="processes (one per GPU)")
    deepspeed: Literal["zero2", "zero3"] | None = Field(None, description="DeepSpeed ZeRO stage (needs "
                                                                          "deepspeed)")
    fsdp: bool = Field(False, description="PyTorch FSDP2 instead of DDP")


class CellFilter(Strict):
    only: list[str] = Field(default_factory=list, description="glob patterns on cell ids; empty: every cell")
    skip: list[str] = Field(default_factory=list, description="glob patterns on cell ids of cells left out")


class TableColumn(Strict):
    """A column of the paper's table: one eval task's metric, or the mean of the row's other columns."""

    label: str = Field(description="the paper's column label")
    task: str | None = Field(None, description="the eval task (default: the row's `task`)")
    metric: str | None = Field(None, description="a metric label of the task's run log (default: the task's "
                                                 "primary metric)")
    average: bool = Field(
        False,
        description="the mean of the row's non-average columns (n/a unless all have a value)")
    of: list[str] = Field(default_factory=list,
                          description="with `average`: the labels of the columns averaged (empty: every "
                                      "other column)")


class TableRow(Strict):
    """A row of the paper's table: a reference row (`base`, `baseline-KIND`) or one board group (a recipe
    entry, its preset and shots: mean over seeds)."""

    label: str = Field(description="the paper's row label")
    reference: str | None = Field(None, description="a reference row: base, baseline-majority, ...")
    entry: str | None = Field(None, description="a recipe entry id (its `id`, else its default id)")
    preset: str | None = Field(None, description="needed when the entry has several presets")
    shots: int | Literal["all"] | None = Field(None, description="needed when the sweep has several shots "
                                                                 "values")
    task: str | None = Field(
        None,
        description="the eval task of every column of this row (layouts with tasks as rows)")
    blank: list[str] = Field(default_factory=list, description="labels of columns this row does not measure "
                                                               "(n/a; say why in a comment)")


class TableSpec(Strict):
    """The paper's layout: rows in its order, columns = eval task x metric (`docs/training-eval.md`)."""

    title: str | None = Field(None, description="the table's title")
    columns: list[TableColumn] = Field(description="the paper's column order: eval task x metric")
    rows: list[TableRow] = Field(description="the paper's row order")
    decimals: int = Field(2, ge=0, le=4, description="digits after the decimal point (the paper's precision)")

    @model_validator(mode="after")
    def _average_last(self) -> TableSpec:
        if any(c.average for c in self.columns[:-1]):
            raise ValueError("the average column comes last (the board adds it after the others)")
        labels = {c.label for c in self.columns if not c.average}
        for c in self.columns:
            if c.of and (not c.average or set(c.of) - labels):
                raise ValueError(f"column {c.label!r}: `of` names average columns' other columns "
                                 f"({sorted(labels)}); it needs `average: true`")
        return self


class SweepConfig(Strict):
    name: SafeName | None = Field(None, description="the sweep's name (default: the file's stem): its folder "
                                                    "runs/sweeps/<name> and board title")
    model: str = Field(description="the base model: folder, hub id, or tiny / tiny:small (built offline into "
                                   "SWEEP/models/)")
    recipes: list[str | RecipeEntry] = Field(description="the recipe entries: a recipe name, or a "
                                                         "`RecipeEntry`")
    tasks: list[SafeName] = Field(
        description="training tasks: shipped task names (each becomes a folder name, never a path)")
    eval_tasks: list[SafeName] | dict[SafeName, list[SafeName]] | None = Field(
        None,
        description="the eval tasks of every cell, or a mapping {training task: [eval tasks]} (tasks it "
                    "does not name evaluate on themselves); default: each cell's training task")
    prompt: Prompts = Field(None, description="the tasks' prompt variant, for training (--prompt) and "
                                              "evaluation (-T) alike; or per task: {medmnist_retina: names, "
                                              "covid_severity: r1}")
    eval_prompt: Prompts = Field(None, description="the evaluations' (and reference rows') prompt variant; "
                                                   "default: `prompt`")
    data_dir: str | None = Field(None, description="the tasks' local data copy (for split, run, and train)")
    shots: list[int | Literal["all"]] = Field(
        default_factory=lambda: list[int | Literal["all"]](["all"]),
        description="k training samples per class (`medharness split`), or all")
    split_seed: Seed | None = Field(
        None,
        description="null: each seed draws its own k-shot subset; an int: one subset for all seeds")
    whole_split: dict[SafeName, list[int]] = Field(
        default_factory=dict,
        description="per training task, the `shots` values whose cells train on the task's whole training "
                    "split instead of k per class (a paper's exception, e.g. VRFT-Aug's 256-shot BreastMNIST "
                    "and RetinaMNIST); the cells keep their kK ids and board rows")
    seeds: list[Seed] = Field(default_factory=lambda: [0], description="the training seeds")
    presets: list[str | None] = Field(
        default_factory=lambda: list[str | None]([None]),
        description="the preset axis (\"a+b\" layers a then b); null: the recipe's own")
    common_presets: list[str] = Field(
        default_factory=list,
        description="layered after each cell's preset (e.g. tiny_cpu), not part of cell ids")
    overrides: list[str] = Field(default_factory=list, description="-C KEY=VALUE for every cell")
    max_steps: int | None = Field(None, ge=1, description="train --max-steps for every cell")
    eval: EvalSpec = Field(EvalSpec(), description="how cells and reference rows are evaluated (`EvalSpec`)")
    baselines: list[str] = Field(
        default_factory=list,
        description="baseline reference rows: majority, random, constant:TEXT")
    base_row: bool = Field(True, description="evaluate the base model once as a reference row (`base`)")
    launch: LaunchSection = Field(LaunchSection(), description="how each train stage starts "
                                                               "(`LaunchSection`; no GPU: a CPU config)")
    cells: CellFilter = Field(CellFilter(), description="glob filters on cell ids (`CellFilter`; a kept cell "
                                                        "keeps the cells it trains from)")
    reference: str | None = Field(None, description="the board spec holding the paper's published rows: a "
                                                    "shipped board's name (leaderboards/boards/) or a path "
                                                    "relative to the sweep file")
    table: TableSpec | None = Field(None, description="the paper's layout of the board (`TableSpec`)")

    _listify = field_validator("tasks", "eval_tasks", "shots", "seeds", "presets", "overrides", "baselines",
                               mode="before")(_as_list)

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_file(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("is the board spec with the published numbers (a name or a path); "  # noqa: TRY004
                             "the base model's row is "
                             f"`base_row: {str(value).lower()}`")  # (pydantic reports ValueErrors)
        return value

    @field_validator("shots")
    @classmethod
    def _positive_shots(cls, shots: list[int | str]) -> list[int | str]:
        if any(isinstance(k, int) and k < 1 for k in shots):
            raise ValueError("shots are k >= 1 per class, or 'all'")
        return shots

    @field_validator("overrides")
    @classmethod
    def _key_value(cls, items: list[str]) -> list[str]:
        bad = [i for i in items if "=" not in i or i.startswith("=")]
        if bad:
            raise ValueError(f"overrides are KEY=VALUE strings, got {bad}")
        return items

    @model_validator(mode="after")
    def _whole_split_shots(self) -> SweepConfig:
        for task, ks in self.whole_split.items():
            if set(ks) - set(self.shots):
                raise ValueError(f"whole_split: {task}: {sorted(set(ks) - set(self.shots))} are not among "
                                 f"the sweep's shots {self.shots}")
        return self

    def entries(self) -> list[RecipeEntry]:
        return [RecipeEntry(recipe=r) if isinstance(r, str) else r for r in self.recipes]

    def kshot(self, task: str, shots: int | None) -> int | None:
        """The k of a cell's `medharness split` (None: it trains on the task's whole training split)."""
        return None if shots is None or shots in self.whole_split.get(task, []) else shots


@dataclass(frozen=True)
class Cell:
    """One training run of the grid and its evaluations."""

    id: str
    entry: RecipeEntry
    preset: str | None  # the preset axis value (or the entry's fixed preset)
    task: str
    shots: int | None  # None = every training sample
    seed: int
    parent: str | None  # the cell whose final checkpoint this one starts from
    stage: int  # 1 = from the base model; parent's stage + 1 otherwise

    @property
    def presets(self) -> list[str]:
        return self.preset.split("+") if self.preset else []


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+]+", "-", text).strip("-").lower() or "x"


def cell_id(entry: str, preset: str | None, task: str, shots: int | None, seed: int) -> str:
    parts = [entry, preset, task, f"k{'all' if shots is None else shots}", f"s{seed}"]
    return "-".join(slug(p) for p in parts if p)


def load_sweep(path: Path | str) -> SweepConfig:
    """Parse and validate a sweep file; errors name the file, the line and the key."""
    path = Path(path)
    sweep, _ = load_strict(SweepConfig, path, "sweep file")
    try:
        expand(sweep)  # ids, `from:` references
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return sweep


def _parent_preset(parent: RecipeEntry, child: RecipeEntry, preset: str | None,
                   axis: list[str | None]) -> str | None:
    if parent.preset:
        return parent.preset
    if not child.preset:
        return preset
    if len(axis) == 1:
        return axis[0]
    raise ConfigError(f"recipe '{child.key}' has its own preset but trains from '{parent.key}', which "
                      f"follows the presets axis {axis}: give '{parent.key}' a preset too")


MAX_CELLS = 10_000  # each cell is a training run: far more than any paper's table


def expand(sweep: SweepConfig) -> list[Cell]:
    """Every cell of the grid, parents before children, filtered by `cells.only/skip` (a kept cell keeps the
    cells it trains from)."""
    entries: dict[str, RecipeEntry] = {}
    for entry in sweep.entries():
        if entry.key in entries:
            raise ConfigError(f"two recipes have the id '{entry.key}': give one an `id:`")
        if entry.parent is not None and entry.parent not in entries:
            raise ConfigError(f"recipe '{entry.key}' trains from '{entry.parent}', which is not a recipe "
                              f"listed before it (known: {', '.join(entries) or 'none'})")
        entries[entry.key] = entry
    size = len(sweep.shots) * len(sweep.seeds) * sum(
        (1 if e.preset else len(sweep.presets)) * len(e.tasks or sweep.tasks) for e in entries.values())
    if size > MAX_CELLS:  # counted before a cell is built: a grid of millions would fill memory first
        raise ConfigError(f"the grid has {size:,} cells (recipes x presets x tasks x shots x seeds), more "
                          f"than the {MAX_CELLS:,} a sweep runs: narrow an axis, or split the sweep")
    cells: dict[str, Cell] = {}
    for entry in entries.values():
        axis = [entry.preset] if entry.preset else list(sweep.presets)
        for preset in axis:
            for task in entry.tasks or sweep.tasks:
                for k in sweep.shots:
                    shots = None if k == "all" else int(k)
                    for seed in sweep.seeds:
                        parent_id, stage = None, 1
                        if entry.parent is not None:
                            parent = entries[entry.parent]
                            p_preset = _parent_preset(parent, entry, preset, list(sweep.presets))
                            parent_id = cell_id(parent.key, p_preset, task, shots, seed)
                            if parent_id not in cells:
                                raise ConfigError(f"recipe '{entry.key}' trains from '{parent.key}', which "
                                                  f"has no cell for task {task} (its tasks: "
                                                  f"{', '.join(parent.tasks or sweep.tasks)})")
                            stage = cells[parent_id].stage + 1
                        cid = cell_id(entry.key, preset, task, shots, seed)
                        if cid in cells:
                            raise ConfigError(f"two cells get the id '{cid}': give the recipes distinct ids")
                        cells[cid] = Cell(cid, entry, preset, task, shots, seed, parent_id, stage)
    keep = {c.id for c in cells.values() if _selected(c.id, sweep.cells)}
    for cid in list(keep):
        while cells[cid].parent is not None:
            cid = str(cells[cid].parent)
            keep.add(cid)
    return sorted((c for c in cells.values() if c.id in keep), key=lambda c: c.stage)


def _selected(cid: str, filters: CellFilter) -> bool:
    if filters.only and not any(fnmatch.fnmatch(cid, p) for p in filters.only):
        return False
    return not any(fnmatch.fnmatch(cid, p) for p in filters.skip)


def eval_tasks(sweep: SweepConfig, cell: Cell) -> list[str]:
    """The tasks a cell is evaluated on: the sweep's list, its training task's entry in the mapping, or the
    training task itself."""
    if isinstance(sweep.eval_tasks, dict):
        return list(sweep.eval_tasks.get(cell.task, [cell.task]))
    return list(sweep.eval_tasks) if sweep.eval_tasks else [cell.task]


def train_tasks(sweep: SweepConfig) -> list[str]:
    """Every training task of the sweep (its `tasks` and the entries' own)."""
    return list(dict.fromkeys([*sweep.tasks, *(t for e in sweep.entries() for t in e.tasks or [])]))


def all_eval_tasks(sweep: SweepConfig) -> list[str]:
    if isinstance(sweep.eval_tasks, list) and sweep.eval_tasks:
        return list(dict.fromkeys(sweep.eval_tasks))
    mapping = sweep.eval_tasks if isinstance(sweep.eval_tasks, dict) else {}
    return list(dict.fromkeys(t for task in train_tasks(sweep) for t in mapping.get(task, [task])))


def train_prompt(sweep: SweepConfig, cell: Cell) -> str | None:
    """The prompt variant a cell trains with (None: the task's default)."""
    return pick(cell.entry.prompt, cell.task) or pick(sweep.prompt, cell.task)


def eval_prompt(sweep: SweepConfig, cell: Cell | None, task: str) -> str | None:
    """The prompt variant of a cell's evaluation on `task` (`cell` None: the reference rows'): `eval_prompt`,
    else `prompt`, of the entry, then of the sweep."""
    if cell is not None:
        chosen = pick(cell.entry.eval_prompt, task) or pick(cell.entry.prompt, task)
        if chosen:
            return chosen
    return pick(sweep.eval_prompt, task) or pick(sweep.prompt, task)
