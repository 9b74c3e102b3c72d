"""Loading the recipe config (its schema: `schema.py`; unknown keys are errors naming file, line and key).

Layers, later wins: the named presets (`trainers/presets/*.yaml`, in order), `--config FILE`, the CLI flags
(`--task`, `--model`, `--samples`, `--seed`, `--max-steps`) and `-C key=value` overrides (dotted keys).
A layer may hold `recipes: {grpo: {...}}`: settings applied only when that recipe runs (so one overlay
preset such as `tiny_cpu` serves every recipe), merged right after the rest of its layer. The `trl:` section
is validated by constructing TRL's own config object (`GRPOConfig`, `SFTConfig`, `DPOConfig`): a key TRL does
not know is an error naming the file and line where it was written.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medharness.core.errors import ConfigError
from medharness.core.yamlio import Loc, load_value, load_yaml_with_lines
from medharness.trainers import PRESETS_DIR, preset_names
from medharness.trainers.recipes.base import TRAINERS, recipe_class
from medharness.trainers.schema import TrainConfig, trl_problems

# Set by medharness itself, never in `trl:` (they would silently disagree with the run).
RESERVED_TRL = {"output_dir": "--output", "seed": "the top-level `seed:`",
                "data_seed": "the top-level `seed:`"}
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass
class Layers:
    """The merged raw config plus, for every key path, where it was last set ("file:line" or "-C ...")."""

    data: dict[str, Any] = field(default_factory=dict)
    origin: dict[Loc, str] = field(default_factory=dict)
    presets: list[str] = field(default_factory=list)

    def add(self, data: dict[str, Any], where: str, lines: dict[Loc, int] | None = None, path: Loc = (),
            line_prefix: Loc = ()) -> None:
        """Merge one layer; `line_prefix` is where `data` sits in its file (a `recipes: {grpo: ...}` part)."""
        lines = lines or {}
        for key, value in data.items():
            loc = (*path, key)
            line = lines.get((*line_prefix, *loc))
            self.origin[loc] = f"{where}:{line}" if line else where
            node = self._node(path)
            if isinstance(node.get(key), dict) and value is not None and not isinstance(value, dict):
                # it would replace every setting the earlier layers made there (null removes them on purpose)
                raise ConfigError(f"{self.origin[loc]}: {'.'.join(map(str, loc))} is a mapping of settings, "
                                  f"got {type(value).__name__} {value!r}")
            if isinstance(value, dict):
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                self.add(value, where, lines, loc, line_prefix)
            else:
                node[key] = copy.deepcopy(value)
                full = (*line_prefix, *loc)
                for sub, sub_line in lines.items():  # list items: rewards.0.metric
                    if len(sub) > len(full) and sub[: len(full)] == full:
                        self.origin[sub[len(line_prefix):]] = f"{where}:{sub_line}"

    def add_layer(self, data: dict[str, Any], where: str, recipe: str,
                  lines: dict[Loc, int] | None = None) -> None:
        """A whole layer: its `recipes: {name: settings}` part for `recipe` merged right after the rest, so
        a later layer (or -C) still wins over it."""
        data = dict(data)
        scoped = data.pop("recipes", None) or {}
        if not isinstance(scoped, dict):
            raise ConfigError(f"{where}: `recipes` maps recipe names to settings")

        for name in scoped:
            TRAINERS.get(str(name))  # a misspelt recipe name in `recipes:` is an error too
        self.add(data, where, lines)
        if isinstance(scoped.get(recipe), dict):
            self.add(scoped[recipe], where, lines, line_prefix=("recipes", recipe))

    def _node(self, path: Loc) -> dict[str, Any]:
        node = self.data
        for part in path:
            node = node.setdefault(str(part), {})
        return node

    def where(self, loc: Loc) -> str:
        """The origin of the deepest known key of `loc`."""
        best = "(config)"
        for i in range(1, len(loc) + 1):
            best = self.origin.get(tuple(loc[:i]), best)
        return best


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if name not in preset_names():  # a name, never a path: `../x` is just unknown
        names = preset_names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown preset '{name}'.{hint} Available: {', '.join(names)}")
    return path


def read_layer(path: Path) -> tuple[dict[str, Any], dict[Loc, int]]:
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe config is a mapping of keys, got {type(data).__name__}")
    return data, lines


def parse_override(item: str) -> tuple[list[str], Any]:
    """`-C trl.learning_rate=1e-5` -> (["trl", "learning_rate"], 1e-05)."""
    key, eq, raw = item.partition("=")
    if not eq or not key or any(not p for p in key.split(".")):
        raise ConfigError("-C expects KEY=VALUE with a dotted KEY (e.g. trl.learning_rate=1e-5), got "
                          f"{item!r}")
    return key.split("."), load_value(raw, f"-C {item}") if raw else ""


def nested(keys: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(keys):
        out = {key: out}
    return out


def numbers(value: Any) -> Any:
    """YAML 1.1 reads `1e-6` as a string: turn number-looking strings (in `trl:`) into numbers."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and re.fullmatch(r"[-+]?\d+", value.strip()) else number
    return value


def _pydantic_error(exc: ValidationError, layers: Layers, prefix: tuple[str, ...] = ()) -> str:
    msgs = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        where = layers.where(loc)
        if err["type"] == "extra_forbidden":
            msgs.append(f"{where}: unknown key '{key}'")
        else:
            msgs.append(f"{where}: {key}: {err['msg']}")
    return "invalid recipe config\n  " + "\n  ".join(msgs)


def build_config(layers: Layers) -> TrainConfig:
    """Validate the merged layers into a `TrainConfig`."""
    data = copy.deepcopy(layers.data)
    if not data.get("recipe"):
        raise ConfigError("no recipe given: pass --recipe NAME or a preset / --config that sets `recipe:`")
    if isinstance(data.get("trl"), dict):
        data["trl"] = {k: numbers(v) for k, v in data["trl"].items()}
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_error(exc, layers)) from None

    try:
        recipe_class(config.recipe).parse_options(config.options)
    except ValidationError as exc:
        raise ConfigError(_pydantic_error(exc, layers, prefix=("options",))) from None
    problems = [f"{layers.where(('trl', key))}: trl.{key} = {config.trl[key]!r}: must be {need}"
                for key, need in trl_problems(config.trl)]
    if problems:
        raise ConfigError("invalid recipe config\n  " + "\n  ".join(problems))
    return config


def trl_args(config: TrainConfig, layers: Layers, output: Path, use_gpu: bool) -> Any:
    """TRL's config object for the recipe, constructed from the `trl:` section (validating every key)."""
    cls = recipe_class(config.recipe).config_class()
    known = {f.name for f in dataclasses.fields(cls)}
    settings = dict(config.trl)
    for key in settings:
        where = layers.where(("trl", key))
        if key in RESERVED_TRL:
            raise ConfigError(f"{where}: trl.{key} is set by medharness: use {RESERVED_TRL[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown TRL setting 'trl.{key}' for {cls.__name__} "
                              f"(trl {_trl_version()}).{hint}")
    if settings.get("bf16") == "auto":
        settings["bf16"] = use_gpu
    settings.setdefault("report_to", "none")
    settings.setdefault("disable_tqdm", True)  # medharness prints its own progress lines
    if not use_gpu:
        settings.setdefault("use_cpu", True)
    try:
        return cls(output_dir=str(output), seed=config.seed, data_seed=config.seed, **settings)
    except (ValueError, TypeError) as exc:
        named = [key for key in sorted(config.trl) if _names(str(exc), key)]
        named += [key for derived, keys in DERIVED_TRL.items() if _names(str(exc), derived)
                  for key in keys if key in config.trl and key not in named]
        where = "; ".join(f"trl.{key} = {config.trl[key]!r} ({layers.where(('trl', key))})" for key in named)
        raise ConfigError(f"{cls.__name__} refused the trl settings: {exc}"
                          + (f" (set here: {where})" if where else "")) from None


# TRL values computed from others, which an error may name instead of the keys a user sets
DERIVED_TRL = {"generation_batch_size": ("per_device_train_batch_size", "gradient_accumulation_steps",
                                         "steps_per_generation")}


def _names(message: str, key: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message) is not None


def _trl_version() -> str:
    from importlib.metadata import version

    return version("trl")


def _one_recipe(recipe: str | None, files: list[tuple[str, dict[str, Any], dict[Loc, int]]],
                config_file: Path | None, user: tuple[dict[str, Any], dict[Loc, int]] | None,
                overrides: list[str]) -> None:
    """Every place that names the recipe (presets, `--config`, `-C recipe=`, `--recipe`) names the same one:
    a later layer never switches it silently."""
    named = [(str(preset_path(name)), data["recipe"]) for name, data, _ in files if data.get("recipe")]
    if user is not None and user[0].get("recipe"):
        named.append((str(config_file), user[0]["recipe"]))
    named += [(f"-C {item}", value) for item in overrides
              for keys, value in [parse_override(item)] if keys == ["recipe"]]
    named += [("--recipe", recipe)] if recipe else []
    if len({str(value) for _, value in named}) > 1:
        raise ConfigError("the recipe is set to different values: "
                          + "; ".join(f"{value} ({where})" for where, value in named) + ": name one")


def load_layers(recipe: str | None, presets: list[str], config_file: Path | None, cli: dict[str, Any],
                overrides: list[str]) -> Layers:
    """Merge presets, `--config FILE`, CLI flags and `-C` overrides. With no preset that names a recipe,
    the recipe's own preset (`grpo` for `--recipe grpo`, `vrft_aug_paper` for `--recipe vrft_aug`) comes
    first, so every TRL setting is explicit."""
    files = [(name, *read_layer(preset_path(name))) for name in presets]
    if config_file is not None and not config_file.exists():  # a FIFO or a device: read_layer names it
        raise ConfigError(f"config file {config_file} does not exist")
    user = read_layer(config_file) if config_file is not None else None
    named = [d.get("recipe") for _, d, _ in files if d.get("recipe")]
    chosen = recipe or (named[-1] if named else None) or (user[0].get("recipe") if user else None)
    if chosen is None:
        raise ConfigError("no recipe given: pass --recipe NAME, or a preset / --config that sets `recipe:`")

    own = TRAINERS.get(str(chosen)).own_preset or str(chosen)  # "did you mean" for a misspelt recipe
    if not named and own in preset_names():
        files.insert(0, (own, *read_layer(preset_path(own))))
    layers = Layers()
    for name, data, lines in files:
        layers.add_layer(data, str(preset_path(name)), str(chosen), lines)
        layers.presets.append(name)
    if user is not None:
        layers.add_layer(user[0], str(config_file), str(chosen), user[1])
    for key, value in cli.items():
        if value is not None:
            layers.add(nested(key.split("."), value), f"--{key.split('.')[-1].replace('_', '-')}")
    for item in overrides:
        keys, value = parse_override(item)
        layers.add_layer(nested(keys, value), f"-C {item}", str(chosen))
    _one_recipe(recipe, files, config_file, user, overrides)
    layers.data["recipe"] = chosen
    return layers
