"""The papers as written, checked: every row of the `## Fidelity to the paper` table of each recipe page
(docs/recipes/*.md, the format of issue 21) is held against the paper's text (its quote occurs verbatim,
whitespace collapsed) and against the resolved configs, through the functions whose objects
`train --dry-run --json` and `train-then-eval --dry-run --json` print (trainers/run.py `dry_run`,
trainers/sweeps/check.py `cell_settings`): a preset or sweep edited away from its table fails, naming the row.

A row's Config: `preset NAME` (`a+b` layers presets; `--task T`, `--prompt P` or `--model M` after it where
the preset sets none), `sweep NAME CELL` (CELL: a cell id, or an entry id with one cell), `sweep NAME CELL
eval` (the cell's evaluation settings, per eval task: `TASK.KEY`, or `KEY` when it evaluates one task), `—`.
Key: a dotted path; into a list, an index or the item whose `label` / `task` is that name. Value: YAML,
numbers equal within a relative 1e-9. Verdict: `as written`, `deviation: WHY; restore: -C KEY=VALUE` (the
override is applied and must give VALUE at KEY), or `not reproducible: WHY`.
"""

from __future__ import annotations

import functools
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from medharness.core.errors import MedHarnessError
from medharness.core.yamlio import load_value
from medharness.trainers.config import numbers

pytest.importorskip("trl", reason="the resolved configs are TRL's own config objects")

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "docs" / "recipes"
PAPERS_DIR = ROOT.parent / "shared" / "papers"
PAPERS = {"rarl.md": "rarl.txt", "vrft_aug.md": "vrft-aug.txt", "grpo_study.md": "grpo-medvqa-study.txt"}
SECTION = "## Fidelity to the paper"
HEADER = ["Where", "The paper's words", "Config", "Key", "Value", "Verdict"]
NONE = ("—", "-")
VERDICT = re.compile(r"as written\b.*|deviation: .+; restore: .+|not reproducible: .+", re.DOTALL)


@dataclass(frozen=True)
class Row:
    page: str
    line: int
    where: str
    words: str
    config: str
    key: str
    value: str
    verdict: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line} {self.where} {self.key}"


def cells(line: str) -> list[str]:
    """A Markdown table line's cells (`\\|` is a literal bar), a cell's enclosing backticks removed."""
    parts = [p.strip().replace("\\|", "|") for p in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
    return [p[1:-1].strip() if len(p) > 1 and p[0] == p[-1] == "`" else p for p in parts]


def table(page: Path) -> list[Row] | None:
    """The rows of the page's fidelity table (None: the page has no such section)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    if SECTION not in lines:
        return None
    start = lines.index(SECTION) + 1
    while start < len(lines) and not lines[start].startswith("|"):
        start += 1
    if start >= len(lines) or cells(lines[start]) != HEADER:
        raise AssertionError(f"{page.name}: the table under {SECTION!r} must have the header {HEADER}")
    rows = []
    for number in range(start + 2, len(lines)):
        if not lines[number].startswith("|"):
            break
        parts = cells(lines[number])
        if len(parts) != len(HEADER):
            raise AssertionError(f"{page.name}:{number + 1}: {len(parts)} cells, the table has {len(HEADER)}")
        parts[1] = re.sub(r'^["“]|["”]$', "", parts[1])  # a quote may stand in quotation marks
        rows.append(Row(page.name, number + 1, *parts))
    return rows


def all_rows() -> list[Row]:
    """Every page's rows (a malformed table is reported by the page's own test, not at collection)."""
    rows = []
    for name in PAPERS:
        try:
            rows += table(RECIPES / name) or []
        except (AssertionError, OSError):
            continue
    return rows


@functools.cache
def paper_text(page: str) -> str:
    return " ".join((PAPERS_DIR / PAPERS[page]).read_text(encoding="utf-8").split())


# -- resolving a row's config, as the dry runs do ----------------------------------------------------------

@functools.cache
def resolved(config: str, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The object a row's Config names: `train --dry-run --json`'s for a preset, a sweep cell's `train` or
    `eval` part of `train-then-eval --dry-run --json`; `overrides`: -C items added to its train command."""
    words = shlex.split(config)
    if words[0] == "preset" and len(words) >= 2:
        return _preset(words[1], words[2:], overrides)
    if words[0] == "sweep" and len(words) in (3, 4) and words[3:] in ([], ["eval"]):
        return _sweep_cell(words[1], words[2], "eval" if words[3:] else "train", overrides)
    raise AssertionError(f"Config {config!r}: write `preset NAME`, `sweep NAME CELL`, `sweep NAME CELL eval` "
                         "or `—`")


def _preset(names: str, flags: list[str], overrides: tuple[str, ...]) -> dict[str, Any]:
    from medharness.trainers.cli import parse_train_args, train_request
    from medharness.trainers.config import preset_path, read_layer
    from medharness.trainers.run import dry_run

    allowed = {"--task", "--prompt", "--model"}
    if any(f.startswith("-") and f not in allowed for f in flags):
        raise AssertionError(f"preset {names}: only {sorted(allowed)} may follow the preset name")
    presets = names.split("+")
    data = [read_layer(preset_path(name))[0] for name in presets]
    if "--task" not in flags and not any(d.get("task") for d in data):
        raise AssertionError(f"preset {names} sets no task: write `preset {names} --task TASK`")
    if "--model" not in flags and not any(d.get("model") for d in data):
        flags = [*flags, "--model", "MODEL"]  # nothing loads: any name resolves
    argv = ["train", *(x for name in presets for x in ("--preset", name)), *flags,
            *(x for item in overrides for x in ("-C", item))]
    return dry_run(train_request(parse_train_args(argv)))


def _sweep_cell(name: str, wanted: str, part: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    import tempfile

    from medharness.trainers.cli import parse_train_args, train_request
    from medharness.trainers.run import dry_run
    from medharness.trainers.sweeps.check import cell_settings
    from medharness.trainers.sweeps.schema import expand, load_sweep
    from medharness.trainers.sweeps.stages import Stages

    file = ROOT / "trainers" / "sweeps" / f"{name}.yaml"
    sweep = load_sweep(file)
    cells = expand(sweep)
    chosen = [c for c in cells if c.id == wanted] or [c for c in cells if c.entry.key == wanted]
    if len(chosen) != 1:
        raise AssertionError(f"sweep {name}: {wanted!r} names {len(chosen)} cells (give a cell id: "
                             f"{', '.join(c.id for c in cells)})")
    stages = Stages(sweep, file, Path(tempfile.gettempdir()) / "fidelity-sweep-not-written", resume=False)
    try:
        if overrides:  # the cell's train command with the overrides appended (its `-C` items win)
            argv = stages.train_args(chosen[0], stages.cell_model(chosen[0], build=False),
                                     stages.split_file(chosen[0]), False)
            argv += [x for item in overrides for x in ("-C", item)]
            return dry_run(train_request(parse_train_args(argv)), data_elsewhere=True)
        settings = cell_settings(sweep, stages, chosen[0])
    finally:
        stages.close()
    got = settings[part]
    errors = [got.get("error")] if part == "train" else [e.get("error") for e in got.values()]
    if any(errors):
        raise AssertionError(f"sweep {name} cell {wanted}: {'; '.join(filter(None, errors))}")
    return got


def lookup(obj: Any, key: str) -> Any:
    """The value at a dotted key path (a list: by index, or the item whose label / task is the name)."""
    node = obj
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, list):
            named = [x for x in node if isinstance(x, dict) and part in (x.get("label"), x.get("task"))]
            if len(named) != 1:
                labels = [x.get("label") or x.get("task") for x in node if isinstance(x, dict)]
                raise KeyError(f"{key}: no item {part!r} (there: {labels})")
            node = named[0]
        else:
            known = sorted(node) if isinstance(node, dict) else type(node).__name__
            raise KeyError(f"{key}: no {part!r} (there: {known})")
    return node


def eval_lookup(evals: dict[str, Any], key: str) -> Any:
    """An eval row's key: `TASK.KEY`, or `KEY` when the cell evaluates one task."""
    task = key.split(".")[0]
    if task in evals:
        return lookup(evals, key)
    if len(evals) == 1:
        return lookup(next(iter(evals.values())), key)
    raise KeyError(f"{key}: the cell evaluates {sorted(evals)}: write TASK.{key}")


def parse_value(text: str) -> Any:
    def fix(value: Any) -> Any:
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return numbers(value)

    return fix(load_value(text, f"Value {text!r}"))


def same(got: Any, want: Any) -> bool:
    if isinstance(got, bool) or isinstance(want, bool):
        return got is want
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=0.0) or got == want
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in got)
    return bool(got == want)


def value_at(row: Row, overrides: tuple[str, ...] = ()) -> Any:
    obj = resolved(row.config, overrides)
    return eval_lookup(obj, row.key) if row.config.split()[-1] == "eval" else lookup(obj, row.key)


def restore_overrides(verdict: str) -> list[str]:
    """The `-C KEY=VALUE` items of a deviation's `restore:` (none: it restores otherwise)."""
    text = verdict.partition("restore:")[2].replace("`", "")
    return [next(g for g in m.groups() if g is not None)
            for m in re.finditer(r"(?<!\S)-C\s+(?:'([^']*)'|\"([^\"]*)\"|([^\s;,]+))", text)]


def check_row(row: Row, overrides: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with one row (empty: it holds); `overrides` edit its config (a preset moved away)."""
    problems = []
    text = paper_text(row.page)
    for piece in (p.strip() for p in row.words.split("...")):
        if piece and " ".join(piece.split()) not in text:
            problems.append(f"the quote {piece!r} is not in ../shared/papers/{PAPERS[row.page]}")
    if not row.words.strip(" .") or not row.where:
        problems.append("Where and The paper's words must be given")
    if not VERDICT.fullmatch(row.verdict):
        problems.append(f"verdict {row.verdict!r}: write `as written`, `deviation: WHY; restore: OVERRIDE` "
                        "or `not reproducible: WHY`")
    if row.config in NONE:
        if row.key not in NONE or row.value not in NONE:
            problems.append("a row with Config `—` has Key and Value `—`")
        return problems
    try:
        got = value_at(row, overrides)
        want = parse_value(row.value)
    except (KeyError, AssertionError, MedHarnessError) as exc:
        return [*problems, f"{row.config}: {exc}"]
    if not same(got, want):
        problems.append(f"{row.config}: {row.key} is {got!r}, the table says {want!r}")
    if row.verdict.startswith("deviation") and not overrides and not row.config.endswith("eval"):
        for item in restore_overrides(row.verdict):
            key, _, raw = item.partition("=")
            try:
                restored = lookup(resolved(row.config, (item,)), key)
            except (KeyError, AssertionError, MedHarnessError) as exc:
                problems.append(f"restore -C {item}: {exc}")
                continue
            if not same(restored, parse_value(raw)):
                problems.append(f"restore -C {item} gives {key} = {restored!r}")
    return problems


ROWS = all_rows()


@pytest.mark.parametrize("page", sorted(PAPERS))
def test_every_recipe_page_has_a_fidelity_table(page: str) -> None:
    rows = table(RECIPES / page)
    assert rows, f"docs/recipes/{page} has no {SECTION!r} table with rows"


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason="../shared/papers is absent")
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_fidelity_row(row: Row) -> None:
    problems = check_row(row)
    assert not problems, f"{row.name}: " + "; ".join(problems)


# -- the check itself ----------------------------------------------------------------------------------------

def _row(config: str, key: str, value: str, verdict: str = "as written",
         words: str = "rank r=8, $\\alpha=16$") -> Row:
    return Row("rarl.md", 0, "§2.3", words, config, key, value, verdict)


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason="../shared/papers is absent")
def test_a_preset_edited_away_from_its_table_fails_the_check() -> None:
    """Every RARL preset row holds; the same rows against the preset with one setting moved (as an edited
    preset would be) are reported, naming the key."""
    preset_rows = [r for r in ROWS if r.page == "rarl.md" and r.config == "preset rarl"]
    assert {"lora.r", "trl.beta"} <= {r.key for r in preset_rows}
    for row in preset_rows:
        assert check_row(row) == [], row.name
    by_key = {r.key: r for r in preset_rows}
    (moved,) = check_row(by_key["lora.r"], ("lora.r=16",))
    assert "lora.r is 16, the table says 8" in moved
    (moved,) = check_row(by_key["trl.beta"], ("trl.beta=0.0",))
    assert "trl.beta is 0.0" in moved
    sweep_rows = [r for r in ROWS if r.page == "rarl.md" and r.config.startswith("sweep rarl_table2 ")
                  and r.key == "options.reasoning"]
    assert sweep_rows and check_row(sweep_rows[0], ("options.reasoning=similarity",))


def test_the_check_reads_quotes_values_and_verdicts() -> None:
    if not PAPERS_DIR.is_dir():
        pytest.skip("../shared/papers is absent")
    assert check_row(_row("preset rarl", "lora.alpha", "16")) == []
    assert check_row(_row("preset rarl", "rewards.length_reward.args.scale", "1.0e-3")) == []
    assert check_row(_row("preset rarl", "lora.target_modules", "[q_proj, k_proj, v_proj, o_proj]")) == []
    (wrong,) = check_row(_row("preset rarl", "lora.alpha", "32"))
    assert "lora.alpha is 16, the table says 32" in wrong
    (unquoted,) = check_row(_row("—", "—", "—", words="rank r = 16"))
    assert "is not in ../shared/papers/rarl.txt" in unquoted
    assert "no 'nope'" in check_row(_row("preset rarl", "lora.nope", "1"))[0]
    assert "verdict" in check_row(_row("—", "—", "—", verdict="fine"))[0]
    # a deviation's restore is applied: it must give the value it names
    restore = "deviation: made; restore: -C trl.learning_rate=1e-6"
    assert check_row(_row("preset rarl", "trl.learning_rate", "1.0e-5", restore)) == []
    bad_restore = "deviation: x; restore: -C lora.r=x"
    (bad,) = check_row(_row("preset rarl", "trl.learning_rate", "1.0e-5", bad_restore))
    assert "restore -C lora.r=x" in bad
