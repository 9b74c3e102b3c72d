"""Task files: a strict schema for one benchmark, and the `Task` object the pipeline uses.

A task is a YAML file in `tasks/` (or any path given to `--tasks`). Unknown or misspelled keys
are errors naming the file, the line and the key. No code in YAML: parsers, metrics and sources
are named by their registered names plus arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import medharness.tasks as _tasks_package
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import GenerationSettings, Message, Part, Prompt, Sample
from medharness.core.yamlio import line_of, load_value, read_mapping, validate_strict
from medharness.scoring.conventions import CONVENTIONS, resolve_convention
from medharness.scoring.knowledge import knowledge_block
from medharness.scoring.metrics import resolve_metrics
from medharness.scoring.parsers import ParserChain
from medharness.scoring.recipe import Recipe
from medharness.taskfiles.checks import check_fields
from medharness.taskfiles.schema import PromptSpec, TaskConfig, template_fields
from medharness.taskfiles.sources import LoadParams, LocalFiles, SourceSpec, source_label

log = logging.getLogger(__name__)
TASKS_DIR = Path(_tasks_package.__file__).resolve().parent  # tasks/ ships as package data


def parse_task_file(path: Path, overrides: dict[str, Any] | None = None) -> TaskConfig:
    """Load and validate one task YAML; `overrides` are dotted keys applied before validation."""
    data, lines = read_mapping(path, "task file")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    config = validate_strict(TaskConfig, data, "task file", path, lines)
    errors = check_fields(config)
    if errors:
        raise ConfigError("invalid task file\n  " + "\n  ".join(
            f"{path}:{line_of(lines, loc) or '?'}: {'.'.join(map(str, loc))}: {msg}" for loc, msg in errors))
    return config


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"-T {key}: '{part}' is not a mapping in the task file")
    node[parts[-1]] = value


class Task:
    """A validated task file plus what it needs to load samples, render prompts and open images."""

    def __init__(self, config: TaskConfig, path: Path, overridden: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.path = path
        self.overridden = overridden  # top-level keys changed by -T
        self.load_report: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return self.config.version

    @cached_property
    def definition_hash(self) -> str:
        """A hash of the resolved definition (the file with its -T overrides, as validated): a run resumes
        only under the same one."""
        blob = json.dumps(self.config.model_dump(mode="json"), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def prompt_name(self) -> str:
        name = self.config.prompt or self.config.prompts.default
        if name not in self.config.prompts.variants:
            raise ConfigError(
                f"task {self.name}: unknown prompt '{name}'; available: "
                f"{sorted(self.config.prompts.variants)}"
            )
        return name

    @property
    def prompt_spec(self) -> PromptSpec:
        return self.config.prompts.variants[self.prompt_name]

    @cached_property
    def source(self) -> SourceSpec:
        """The data source to use: the local copy when a data dir is given, else the first remote."""
        data_dir = self.config.data_dir
        if data_dir:
            root = Path(data_dir).expanduser()
            if not root.is_dir():
                raise DataError(f"task {self.name}: data dir {root} does not exist")
            local = [s for s in self.config.sources if isinstance(s, LocalFiles)]
            for spec in local:
                if spec.available(root, self.config.split):
                    return spec.bind(root)
            wanted = (", ".join(source_label(s, self.config.split) for s in local)
                      or "no local source declared")
            raise DataError(f"task {self.name}: {root} holds none of the expected files ({wanted})")
        remote = [s for s in self.config.sources if not isinstance(s, LocalFiles)]
        if not remote:
            kinds = ", ".join(source_label(s, self.config.split) for s in self.config.sources)
            raise DataError(
                f"task {self.name} reads local files ({kinds}): pass --data-dir DIR or -T "
                f"{self.name}.data_dir=DIR"
            )
        return remote[0]

    def load_samples(self, split: str | None = None) -> list[Sample]:
        """All samples of a split, with ids checked unique and the size compared to the card."""
        split = split or self.config.split
        params = LoadParams(task=self.name, columns=self.config.columns, filter=self.config.filter)
        samples = self.source.load(params, split)
        ids = [s.id for s in samples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"task {self.name}: duplicate sample id '{dup}' in "
                            f"{source_label(self.source, split)}")
        expected = self.config.card.sizes.get(split)
        self.load_report = {"split": split, "source": source_label(self.source, split),
                            "expected": expected, "actual": len(samples)}
        if expected is not None and expected != len(samples):
            message = (f"task {self.name}: the card expects {expected} {split} samples, "
                       f"{self.load_report['source']} gave {len(samples)}")
            if self.config.check_sizes and "filter" not in self.overridden:
                raise DataError(f"{message} (an incomplete or different copy? -T "
                                f"{self.name}.check_sizes=false runs it anyway)")
            log.warning(message)
        return samples

    def knowledge_text(self, classes: tuple[str, ...]) -> str:
        """The PA_P knowledge block: every class with its attributes, in the task's class order."""
        if self.knowledge_path is None:
            raise ConfigError(f"task {self.name}: prompt '{self.prompt_name}' has no knowledge file")
        return knowledge_block(self.knowledge_path, classes)

    @property
    def knowledge_path(self) -> Path | None:
        """The prompt variant's knowledge file (None: the variant has none)."""
        spec = self.prompt_spec
        return self.path.parent / str(spec.knowledge) if spec.knowledge else None

    def open_image(self, ref: str) -> Any:
        """The one door to a sample's pixels (run loop, judges, trainers): whatever goes wrong opening one
        image (missing, corrupt, over the pixel limit, a source's own bug) is a DataError naming it, which the
        caller records as that sample's error."""
        try:
            return self.source.open_image(ref)
        except DataError as exc:
            named = str(exc) if ref in str(exc) else f"image '{ref}': {exc}"
            raise DataError(f"task {self.name}: {named}") from None
        except Exception as exc:  # noqa: BLE001 - one bad image must never stop a run
            raise DataError(f"task {self.name}: image '{ref}': {type(exc).__name__}: {exc}") from None

    def settings(self, **cli: Any) -> GenerationSettings:
        values = {**self.config.generation, **self.prompt_spec.generation,
                  **{k: v for k, v in cli.items() if v is not None}}
        return GenerationSettings(**values)

    def render(self, sample: Sample, settings: GenerationSettings) -> Prompt:
        """Fill the prompt variant with the sample's fields; image parts as the variant places them."""
        spec = self.prompt_spec
        fields = {**{k: v for k, v in sample.meta.items() if isinstance(v, (str, int, float))},
                  "question": sample.question,
                  "choices": "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(sample.choices)),
                  "classes": ", ".join(sample.choices)}
        if spec.knowledge:
            fields["knowledge"] = self.knowledge_text(sample.choices)
        text = _fill(spec.user, fields, self.name, self.prompt_name)
        images = tuple(Part(type="image", image=ref) for ref in sample.images)
        user = (*images, Part(type="text", text=text)) if spec.images == "before" else (
            Part(type="text", text=text), *images)
        messages = [Message(role="user", content=user)]
        if spec.system:
            system = _fill(spec.system, fields, self.name, self.prompt_name)
            messages.insert(0, Message(role="system", content=(Part(type="text", text=system),)))
        return Prompt(sample_id=sample.id, messages=tuple(messages), settings=settings)


def _fill(template: str, fields: dict[str, Any], task: str, prompt: str) -> str:
    try:
        names = template_fields(template)
    except ValueError as exc:
        raise ConfigError(f"task {task}, prompt '{prompt}': {exc}") from None
    missing = sorted(names - set(fields))
    if missing:
        raise ConfigError(f"task {task}, prompt '{prompt}': unknown placeholder(s) {missing}; "
                          f"available: {sorted(fields)}")
    return template.format_map(fields)


def recipe_for(task: Task, convention: str | None = None, prompt: str | None = None) -> Recipe:
    """The task's declared scoring, or a named peer convention applied to the task's samples."""
    scoring = task.config.scoring
    variant = task.config.prompts.variants[prompt or task.prompt_name]
    task_parser = variant.parser or scoring.parser
    declared = CONVENTIONS.get(scoring.convention)
    if convention is None or resolve_convention(convention) is declared:
        metrics = scoring.metrics if scoring.metrics is not None else declared.metrics
        return Recipe(declared.qualified, ParserChain(task_parser),
                      resolve_metrics([*metrics, *variant.metrics]))
    conv = resolve_convention(convention)
    return Recipe(conv.qualified, ParserChain(conv.parser or task_parser), resolve_metrics(conv.metrics))


def discover_tasks() -> dict[str, Path]:
    """Task name -> file for every YAML shipped in tasks/ (the file stem is the task name)."""
    return {p.stem: p for p in sorted(TASKS_DIR.glob("*.yaml"))}


def families() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, path in discover_tasks().items():
        fam = _peek_family(path)
        if fam:
            out.setdefault(fam, []).append(name)
    return out


_FAMILY = re.compile(r"^family:[ \t]*['\"]?([A-Za-z0-9._-]+)['\"]?[ \t]*(?:#.*)?$", re.MULTILINE)


def _peek_family(path: Path) -> str | None:
    """A shipped task file's top-level `family:` read from its text (parsing all of them for a name cost
    ~0.25 s; the tests check the peek against the parsed files)."""
    try:
        found = _FAMILY.search(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    return found.group(1) if found else None


def resolve_task_names(spec: str) -> list[str | Path]:
    """'vqa_rad,phantom,path/to/x.yaml' -> task names (families expanded) and file paths. The task files are
    read for their families only when a name is not a task's own (a task name costs no parsing)."""
    known, fams = discover_tasks(), None
    out: list[str | Path] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.endswith((".yaml", ".yml")):
            out.append(Path(item))
        elif item in known:
            out.append(item)
        elif item in (fams := fams if fams is not None else families()):
            out.extend(fams[item])
        else:
            import difflib

            choices = sorted([*known, *fams])
            close = difflib.get_close_matches(item, choices, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown task '{item}'.{hint} Available: {', '.join(choices)}")
    if not out:
        raise ConfigError("no task given")
    return out


def load_task(ref: str | Path, overrides: dict[str, Any] | None = None) -> Task:
    """A task by name (from tasks/) or by YAML path (a Path, or text ending in .yaml / .yml, as
    `resolve_task_names` reads a --tasks item), with `-T` overrides applied."""
    if isinstance(ref, str) and ref.endswith((".yaml", ".yml")):
        ref = Path(ref)
    path = ref if isinstance(ref, Path) else discover_tasks().get(ref)
    if path is None:
        resolve_task_names(str(ref))  # raises with a "did you mean"
        raise ConfigError(f"unknown task '{ref}'")
    if not path.exists():
        raise ConfigError(f"task file {path} does not exist")
    config = parse_task_file(path, overrides)
    if isinstance(ref, str) and config.name != ref:
        raise ConfigError(f"{path}: name '{config.name}' must equal the file name '{ref}'")
    return Task(config, path, frozenset(k.split(".")[0] for k in overrides or {}))


def parse_task_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """`-T vqa_rad.prompt=r1 -T vqa_rad.data_dir=DIR` -> {"vqa_rad": {"prompt": "r1", ...}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        task, dot, field = key.partition(".")
        if not eq or not dot or not task or not field:
            raise ConfigError(f"-T expects TASK.KEY=VALUE, got {item!r}")
        out.setdefault(task, {})[field] = load_value(value, f"-T {key}") if value else ""
    return out


def overrides_for(task: str, items: list[str]) -> dict[str, Any]:
    """The `-T` items of a command that takes one `--task` (a name or a YAML path); another task's is an
    error."""
    name = Path(task).stem if task.endswith((".yaml", ".yml")) else task
    given = parse_task_overrides(items)
    unknown = set(given) - {name}
    if unknown:
        raise ConfigError(f"-T names task(s) {sorted(unknown)}, not --task {name}")
    return dict(given.get(name, {}))
