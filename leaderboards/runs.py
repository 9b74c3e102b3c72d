"""Run directories as a board reads them: which paths are runs (the others are skipped with a note), which
runs failed (left out and listed), a unique label per run and its lineage. A task's values with their
intervals: `medharness.runs.results`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medharness.core.errors import DataError
from medharness.core.records import RunLog
from medharness.runs.folders import MODEL_FOLDERS, RUN_GLOBS, SWEEP_FILE, is_checkpoint
from medharness.runs.runlog import RUN_FILE, RunDir


@dataclass
class Opened:
    """What a list of paths holds: the runs to show, and what was left out (with the reason)."""

    runs: list[RunDir] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # paths that are no run directory
    failed: list[str] = field(default_factory=list)  # runs whose status is "failed"
    notes: list[str] = field(default_factory=list)  # runs shown with a caveat (still running, interrupted)

    def messages(self) -> list[str]:
        return ([f"skipped {s}" for s in self.skipped] + [f"left out failed run {f}" for f in self.failed]
                + self.notes)


def runs_inside(path: Path) -> list[Path]:
    """The run directories a sweep or training folder holds, in its layout's order; [] for any other path."""
    for marker, patterns in RUN_GLOBS.items():
        if (path / marker).is_file():
            return [p for pattern in patterns for p in sorted(path.glob(pattern)) if (p / RUN_FILE).is_file()]
    return []


def _not_a_run(path: Path) -> str:
    if not path.exists():
        return f"{path}: no such file or folder"
    if not path.is_dir():
        return f"{path}: a file, not a run directory"
    return f"{path}: not a run directory (no {RUN_FILE})"


def open_runs(paths: Iterable[Path], strict: bool = False, missing_ok: bool = False) -> Opened:
    """Open each path as a run directory. A sweep or training folder stands for the run directories it holds
    (said in a note); any other path that is no run directory is skipped with a note (an error when `strict`);
    a failed run is left out and listed; a run log that cannot be read is an error. A path that does not exist
    is an error unless `missing_ok` (a board spec's row whose run is not made yet)."""
    out = Opened()
    seen: set[Path] = set()
    queue = [Path(p) for p in paths]
    while queue:
        path = queue.pop(0)
        inside = [] if (path / RUN_FILE).is_file() else runs_inside(path)
        if inside:
            kind = "train-then-eval" if (path / SWEEP_FILE).is_file() else "training"
            out.notes.append(f"{path}: a {kind} folder; its {len(inside)} run directories are shown")
            queue[:0] = inside
            continue
        if not (path / RUN_FILE).is_file():
            if strict or not (path.exists() or missing_ok):
                raise DataError(_not_a_run(path))
            out.skipped.append(_not_a_run(path))
            continue
        if path.resolve() in seen:
            out.notes.append(f"{path}: given twice; shown once")
            continue
        seen.add(path.resolve())
        run = RunDir.open(path)
        log = run.log
        if log.status == "failed":
            out.failed.append(f"{path} ({log.error or 'no reason recorded'})")
            continue
        if log.status != "finished":
            out.notes.append(f"{path}: status {log.status!r}; only its finished tasks are shown")
        out.runs.append(run)
    return out


def unique_labels(runs: Sequence[RunDir]) -> list[str]:
    """Each run's label (else its run id). Where runs would share one (a sweep's evaluations are all named
    after their task), each gets the nearest folder of its path that no other of them has:
    `base/phantom_presence`, `sft-phantom_presence-kall-s0/phantom_presence` (a run given a --label: `LABEL
    (folder)`); so no row ever stands for two runs."""
    labels = [r.log.display_name for r in runs]
    for name in set(labels):
        clash = [i for i, label in enumerate(labels) if label == name]
        if len(clash) < 2:
            continue
        parts = [runs[i].path.resolve().parts for i in clash]
        counts: dict[str, int] = {}
        for p in parts:
            for part in set(p):
                counts[part] = counts.get(part, 0) + 1
        for i, p in zip(clash, parts, strict=True):
            distinct = next((part for part in reversed(p) if counts[part] == 1), "/".join(p))
            labels[i] = f"{name} ({distinct})" if runs[i].log.label else f"{distinct}/{name}"
    return [label + ORACLE if is_oracle(run) else label for label, run in zip(labels, runs, strict=True)]


ORACLE = " (oracle floor)"


def is_oracle(run: RunDir) -> bool:
    """A baseline without a train split or card prior: its answers come from the golds of the split it is
    scored on (run.json: tasks.TASK.baseline), so its row is labelled as such on every board."""
    return any(e.baseline is not None and e.baseline.kind == "oracle" for e in run.log.tasks.values())


def _short_model(path: str) -> str:
    """A model folder's name; for a training output's `final`, `checkpoint-N` or `merged` folder, the name of
    the training run's folder with it (`sft-s0/final`)."""
    parts = Path(path).parts
    if not parts:
        return path
    keep = [parts[-1]]
    for part in reversed(parts[:-1]):
        if part != "train" and part not in MODEL_FOLDERS and not is_checkpoint(part):
            keep.insert(0, part)
            break
    return "/".join(keep) if keep[-1] in MODEL_FOLDERS or is_checkpoint(keep[-1]) else parts[-1]


def model_name(log: RunLog) -> str:
    model = log.config.model
    return model if model.startswith("baseline:") else (_short_model(model) or model)


def lineage_text(log: RunLog) -> str:
    """`base → recipe[preset] · step N · seed S` from the run's lineage, else the model."""
    t = log.trained_from
    if t is None or not t.known:
        return model_name(log)
    parts = [_short_model(t.base_model) if t.base_model else "?",
             (t.recipe or "?") + (f"[{t.preset}]" if t.preset else "")]
    if t.step is not None:
        parts.append(f"step {t.step}")
    if t.seed is not None:
        parts.append(f"seed {t.seed}")
    return " → ".join(parts[:2]) + "".join(f" · {p}" for p in parts[2:])

