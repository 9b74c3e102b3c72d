"""Sample selection: pinned id lists (`--samples FILE`) and seeded k-shot subsets for trainers.

k-shot picks are stable: within each class, samples are ordered by sha256(seed:id) and the first k are
taken, so two runs pick the same images and the 10-shot set is contained in the 20-shot set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medharness.core.datafiles import read_text
from medharness.core.errors import DataError
from medharness.core.records import Sample


def _rank(seed: int, sample_id: str) -> str:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()


def kshot(samples: Sequence[Sample], k: int, seed: int = 0,
          label: Callable[[Sample], Any] = lambda s: s.target) -> list[Sample]:
    """k samples per class (fewer where a class has fewer), in the dataset's order."""
    if k < 1:
        raise DataError(f"k-shot needs k >= 1, got {k}")
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(json.dumps(label(s), sort_keys=True), []).append(s)
    chosen = {s.id for members in by_class.values()
              for s in sorted(members, key=lambda s: _rank(seed, s.id))[:k]}
    return [s for s in samples if s.id in chosen]


def read_sample_ids(path: Path) -> dict[str, list[str]]:
    """A pinned list: JSON `{task: [ids]}` or `[ids]`, or text with one `id` or `task<TAB>id` per line.
    Ids that apply to every task are stored under "*". A folder: every `*.json` file in it, merged (e.g.
    tasks/subsets/, the pinned CI subsets); a task named by two files is an error."""
    if path.is_dir():
        merged: dict[str, list[str]] = {}
        for file in sorted(path.glob("*.json")):
            for task, ids in read_sample_ids(file).items():
                if task in merged:
                    raise DataError(f"{path}: task {task} has ids in more than one file (second: "
                                    f"{file.name})")
                merged[task] = ids
        if not merged:
            raise DataError(f"{path}: a folder without .json sample-id files")
        return merged
    text = read_text(path, "samples file")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column "
                            f"{exc.colno})") from None
        if isinstance(data, list):
            return {"*": [str(i) for i in data]}
        if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            return {str(t): [str(i) for i in ids] for t, ids in data.items()}
        raise DataError(f"{path}: expected a list of ids or {{task: [ids]}}")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        task, tab, sid = line.rstrip("\n").partition("\t")
        out.setdefault(task if tab else "*", []).append(sid.strip() if tab else line.strip())
    if not out:
        raise DataError(f"{path}: no sample ids")
    return out


def select_pinned(task: str, samples: Sequence[Sample], pinned: dict[str, list[str]],
                  path: Path) -> list[Sample]:
    """The samples named for this task (in dataset order); unknown ids are an error naming a few."""
    wanted = pinned.get(task, []) + pinned.get("*", [])
    if not wanted:
        return []
    known = {s.id for s in samples}
    unknown = [i for i in wanted if i not in known]
    if unknown and task in pinned:
        raise DataError(f"{path}: {len(unknown)} id(s) for task {task} are not in it, e.g. {unknown[:3]}")
    keep = set(wanted)
    chosen = [s for s in samples if s.id in keep]
    if not chosen:
        raise DataError(f"{path}: none of its ids are samples of task {task}")
    return chosen


def write_sample_ids(path: Path, task: str, samples: Sequence[Sample]) -> None:
    path.write_text(json.dumps({task: [s.id for s in samples]}, indent=1) + "\n", encoding="utf-8")
