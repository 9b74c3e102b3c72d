"""A schema field's description is its one documentation (harness/core/schemadocs.py): the docs' tables are
what the schemas render, every field has a description, and `field_help` (the flags' help, read from the
source) says what pydantic says."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal, get_args

import pytest
from pydantic import BaseModel, Field

from medharness.core.records import SafeName, Strict
from medharness.core.schemadocs import field_help, marked_schemas, render_docs, schema_class, schema_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").rglob("*.md"))
# the files users write and the settings the `run` flags set; every schema they nest is documented too
ROOTS = ("medharness.taskfiles.schema:TaskConfig", "medharness.trainers.schema:TrainConfig",
         "medharness.trainers.sweeps.schema:SweepConfig", "medharness.leaderboards.spec:BoardSpec",
         "medharness.runs.pipeline:RunConfig")
FLAGS_ONLY = ("medharness.trainers.evals:EvalRequest",)  # the `train --eval-*` flags: help, no table


def documented() -> list[str]:
    refs = (ref for path in DOCS for ref in marked_schemas(path.read_text(encoding="utf-8")))
    return list(dict.fromkeys(refs))


def described() -> list[type[BaseModel]]:
    return [schema_class(ref) for ref in [*documented(), *FLAGS_ONLY]]


def nested_models(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in get_args(tp) for m in nested_models(arg)]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_tables_are_what_the_schemas_render(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert render_docs(text) == text, f"{path.name}: a stale table; run python scripts/schema_docs.py --write"


def test_every_schema_users_write_is_documented_with_what_it_nests() -> None:
    refs = documented()
    assert set(ROOTS) <= set(refs)
    models = {schema_class(ref) for ref in refs}
    missing = {f"{m.__module__}:{m.__name__}" for model in models for field in model.model_fields.values()
               for m in nested_models(field.annotation) if m not in models}
    assert not missing, f"nested schemas without a table in docs/: {sorted(missing)}"


def test_every_field_has_a_description() -> None:
    missing = [f"{model.__name__}.{name}" for model in described()
               for name, field in model.model_fields.items() if not (field.description or "").strip()]
    assert not missing


def test_field_help_reads_what_pydantic_reads() -> None:
    """`field_help` parses the source (no import); for every field it gives the description pydantic holds."""
    checked = 0
    for model in described():
        for name, field in model.model_fields.items():
            owner = next(c for c in model.__mro__ if name in inspect.get_annotations(c))
            assert field_help(f"{owner.__module__}:{owner.__qualname__}", name).replace("%%", "%") \
                == field.description, f"{model.__name__}.{name}"
            checked += 1
    assert checked > 150


def test_field_help_from_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "probe_schema.py").write_text('''
class First:
    """A docstring whose second line starts at column 0:
no field here."""

    size: int = Field(3, ge=1, description="how many, "
                                           "at most 50% of the rows")
    name: str = Field(description="the name")
    bare: int = 0
    computed: str = Field("x", description=DESCRIPTION)


class Second:
    size: int = Field(default=None, description="another size")
''', encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = "probe_schema:First"
    assert field_help(ref, "size") == "how many, at most 50%% of the rows"  # argparse's help escapes `%`
    assert field_help(ref, "size", default=True) == "how many, at most 50%% of the rows (default 3)"
    assert field_help(ref, "name", default=True) == "the name"  # required: no default
    assert field_help("probe_schema:Second", "size", default=True) == "another size"  # a None default
    for bad, name in ((ref, "bare"), (ref, "computed"), (ref, "missing"), ("probe_schema:Third", "size")):
        with pytest.raises(LookupError):
            field_help(bad, name)
    assert field_help("no_such_module_here:Thing", "size") == ""  # no source: empty help, never a crash


class Inner(Strict):
    depth: int = Field(1, description="how deep")


class Probe(Strict):
    name: SafeName = Field(description="a | b")
    size: int = Field(2, ge=1, le=9, description="how many")
    label: str | None = Field(None, alias="as", description="its label")
    kind: Literal["x", "y"] = Field("x", description="which")
    items: list[SafeName] = Field(default_factory=lambda: ["a"], min_length=1, description="the items")
    rate: float = Field(0.5, allow_inf_nan=False, description="a share")
    inner: Inner = Field(Inner(), description="nested")
    extra: dict[str, Any] = Field(default_factory=dict, description="anything")


def test_schema_table_renders_keys_types_defaults_descriptions() -> None:
    assert schema_table(Probe) == """\
| key | type | default | description |
|---|---|---|---|
| `name` | `SafeName` | required | a \\| b |
| `size` | `int` (>= 1, <= 9) | `2` | how many |
| `as` | `str \\| None` | `null` | its label |
| `kind` | `"x" \\| "y"` | `"x"` | which |
| `items` | `list[SafeName]` (length >= 1) | `["a"]` | the items |
| `rate` | `float` (finite) | `0.5` | a share |
| `inner` | `Inner` | each key's default | nested |
| `extra` | `dict[str, Any]` | `{}` | anything |
"""


def test_render_docs_replaces_only_between_markers() -> None:
    ref = f"{__name__}:Inner"
    text = f"before\n<!-- schema {ref} -->\nold table\n<!-- /schema -->\nafter\n"
    assert render_docs(text) == (f"before\n<!-- schema {ref} -->\n\n{schema_table(Inner)}\n<!-- /schema -->\n"
                                 "after\n")
    assert marked_schemas(text) == [ref]
