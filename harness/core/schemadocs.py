"""Field documentation: a schema field's `Field(description=...)` is its one description; the CLI help and
the docs tables are made from it.

`field_help("module:Class", name)` gives a flag the description of the field it sets without importing the
schema: it reads the class from its module's source, so `--help` imports neither pydantic nor the modules
behind a schema (a test checks it against the description pydantic reads). `schema_table(Model)` renders a
Markdown table of a schema (key, type, default, description); `render_docs(text)` renders afresh every table
between `<!-- schema module:Class -->` and `<!-- /schema -->` (`python scripts/schema_docs.py --write`; a
test keeps docs/ equal to it).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import json
import re
import types
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from medharness.core.display import md_cell

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

MARKERS = re.compile(r"(<!-- schema (\S+) -->\n)(.*?)(<!-- /schema -->)", re.DOTALL)


@functools.cache
def _class_node(ref: str) -> ast.ClassDef | None:
    """The class `module:Class` as parsed from its module's source; None when the source cannot be read."""
    module, _, name = ref.partition(":")
    source = _source(module)
    if source is None:
        return None
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(rf"class {re.escape(name)}\b", line)), None)
    if start is None:
        raise LookupError(f"{module} defines no class {name}")
    # the class alone (up to the next line at column 0), else the whole module
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in ("", " ", "\t", "#")),
               len(lines))
    try:
        tree = ast.parse("\n".join(lines[start:end]))
    except SyntaxError:
        tree = ast.parse(source)
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def _source(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    try:
        return Path(spec.origin).read_text(encoding="utf-8")
    except OSError:
        return None


@functools.cache
def _imported(module: str) -> dict[str, str]:
    """Names a module imports `from X import NAME` -> X (to follow a schema's base classes)."""
    source = _source(module)
    if source is None:
        return {}
    return {alias.asname or alias.name: node.module for node in ast.parse(source).body
            if isinstance(node, ast.ImportFrom) and node.module and not node.level for alias in node.names}


def field_help(model: str, name: str, default: bool = False) -> str:
    """The description of field `name` of the class `model` ("medharness.trainers.schema:TrainConfig"), from
    the class that gives it as a string literal: `model` itself or a base class (followed through the
    module's imports, as a subclass that adds checks to a field keeps its base's description); `%` doubled
    for argparse. With `default`, followed by "(default VALUE)" where the field's default is a literal other
    than None. An unknown class or field, or a field no class describes, is a LookupError. Empty when the
    module's source is not on disk."""
    node = _class_node(model)
    if node is None:
        return ""
    item = next((i for i in node.body if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)
                 and i.target.id == name), None)
    call = item.value if item is not None and isinstance(item.value, ast.Call) else None
    given = {k.arg: k.value for k in call.keywords} if call else {}
    text = given.get("description")
    if call is not None and isinstance(text, ast.Constant) and isinstance(text.value, str):
        value = call.args[0] if call.args else given.get("default")
        help_text = text.value
        if default and isinstance(value, ast.Constant) and isinstance(value.value, (int, float, str)):
            help_text += f" (default {value.value})"
        return help_text.replace("%", "%%")
    module = model.partition(":")[0]
    for base in (b.id for b in node.bases if isinstance(b, ast.Name)):
        try:
            return field_help(f"{_imported(module).get(base, module)}:{base}", name, default)
        except LookupError:
            continue
    if item is None:
        raise LookupError(f"{model} defines no field {name!r}")
    raise LookupError(f"{model}.{name} has no Field(description=...) given as a string literal")


def _type_text(tp: Any) -> str:
    """A type as written in Python, with `SafeName` named (a file-name-safe string)."""
    from medharness.core.records import SafeName

    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    if origin is Annotated:
        return "SafeName" if tp == SafeName else _type_text(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args)}]"
    return str(getattr(tp, "__name__", tp))


def _constraints(field: FieldInfo) -> list[str]:
    """The field's constraints in words: `>= 1`, `finite`, `length >= 1`, ..."""
    words = []
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<",
              "min_length": "length >=", "max_length": "length <="}
    for item in field.metadata:
        words += [f"{sign} {getattr(item, attr)}" for attr, sign in bounds.items()
                  if getattr(item, attr, None) is not None]
        if getattr(item, "allow_inf_nan", None) is False:
            words.append("finite")
    return words


def _default_text(field: FieldInfo) -> str:
    from pydantic import BaseModel

    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "each key's default"
    return f"`{md_cell(json.dumps(value, ensure_ascii=False))}`"


def schema_table(model: type[BaseModel]) -> str:
    """A Markdown table of `model`'s fields in order: key (the alias where there is one), type (with its
    constraints), default, description."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    from medharness.core.records import SafeName

    safe = get_args(SafeName)[1]
    for name, field in model.model_fields.items():
        # pydantic keeps a field's own Annotated metadata apart from its type: name a SafeName field as such
        kind = f"`{md_cell('SafeName' if safe in field.metadata else _type_text(field.annotation))}`"
        constraints = _constraints(field)
        if constraints:
            kind += f" ({', '.join(constraints)})"
        rows.append(f"| `{field.alias or name}` | {kind} | {_default_text(field)} | "
                    f"{md_cell(field.description or '')} |")
    return "\n".join(rows) + "\n"


def schema_class(ref: str) -> type[BaseModel]:
    """The schema `module:Class` (imported)."""
    from pydantic import BaseModel

    module, _, name = ref.partition(":")
    model = getattr(importlib.import_module(module), name, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{ref} is not a pydantic model")
    return model


def marked_schemas(text: str) -> list[str]:
    """The schemas (`module:Class`) whose tables `text` holds between markers."""
    return [m.group(2) for m in MARKERS.finditer(text)]


def render_docs(text: str) -> str:
    """`text` with the table between each pair of schema markers rendered afresh from its schema (blank lines
    around it, so that Markdown reads the markers as HTML blocks apart from the table)."""
    def table(m: re.Match[str]) -> str:
        return f"{m.group(1)}\n{schema_table(schema_class(m.group(2)))}\n{m.group(4)}"

    return MARKERS.sub(table, text)
