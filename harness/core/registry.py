"""One generic registry for every kind of extension (parsers, metrics, backends, conventions, ...).

Entries are registered with a decorator, or lazily as "module:attr" strings so that heavy
backends import nothing until used. Third-party packages plug in through the `medharness`
entry-point group: each entry point names a module that registers things when imported.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, TypeAdapter, ValidationError

from medharness.core.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger(__name__)
_plugins_loaded = False


def load_plugins() -> None:
    """Import every module named in the `medharness` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="medharness"):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the harness
            log.warning("plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)


class Registry(Generic[T]):
    """Name -> object, with lazy entries, duplicate refusal and "did you mean" on a miss."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | None = None) -> Any:
        """`reg.register("x", obj)` or `@reg.register("x")` as a decorator."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def decorator(o: T) -> T:
            self._add(name, o)
            return o

        return decorator

    def add_lazy(self, name: str, target: str) -> None:
        """Register "package.module:attr", imported on first use."""
        if ":" not in target:
            raise ConfigError(f"lazy {self.kind} '{name}' must be 'module:attr', got {target!r}")
        self._add(name, target)

    def _add(self, name: str, obj: T | str) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"bad {self.kind} name {name!r}: use letters, digits, '_' or '-'")
        existing = self._entries.get(name)
        if existing is not None and not self._fulfils(existing, obj):
            raise ConfigError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = obj

    @staticmethod
    def _fulfils(lazy: object, obj: object) -> bool:
        """A lazy "module:attr" entry is replaced when that module registers the real object."""
        return isinstance(lazy, str) and not isinstance(obj, str) and \
            getattr(obj, "__module__", None) == lazy.partition(":")[0]

    def get(self, name: str) -> T:
        if name not in self._entries:
            load_plugins()
        if name not in self._entries:
            raise ConfigError(self._miss_message(name))
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            imported = importlib.import_module(module)
            current = self._entries[name]  # the module may have registered itself on import
            obj = current if not isinstance(current, str) else getattr(imported, attr)
            self._entries[name] = obj
            return obj
        return entry

    def _miss_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.kind} '{name}'.{hint} Available: {', '.join(names)}"

    def name_type(self) -> Any:
        """A type for an argument that names an entry (`normalizer: NormalizerName`): `check_arguments`
        refuses an unknown name, with a "did you mean", when the task file is read."""

        def known(name: str) -> str:
            if name not in self._entries:
                load_plugins()
            if name not in self._entries:
                raise ValueError(self._miss_message(name))
            return name

        return Annotated[str, AfterValidator(known)]

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self.get(n)) for n in self.names()]



def check_arguments(fn: Callable[..., Any], args: dict[str, Any], fixed: int, what: str) -> None:
    """The arguments a task file gives a registered function (a metric's or a parser step's `args`), checked
    as the call will see them: each must be a parameter after its `fixed` positional ones, with a value of the
    annotated type (a registry name type refuses unknown names). Run does the same check, so `validate` passes
    only what `run` accepts."""
    params = list(inspect.signature(fn).parameters.values())[fixed:]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        for key in args:
            if key not in named:
                close = difflib.get_close_matches(str(key), list(named), n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{what} takes no argument '{key}'{hint}; it takes: "
                                  f"{', '.join(named) or 'no arguments'}")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - annotations that cannot be resolved here (a plugin's): names only
        return
    for key, value in args.items():
        if key in hints:
            try:
                TypeAdapter(hints[key]).validate_python(value, strict=True)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ConfigError(f"{what}: argument {key}={value!r}: {msg}") from None
