"""Per-sample scores of a run's task, read from its rows (`samples/<task>.jsonl`): for group cells' intervals
and for paired tests between rows. Rows are read once per (run, task) and kept.

Clusters: samples that share an image are not independent (VQA-RAD asks 451 questions about 203 images); a
sample's cluster is what the task's `cluster_by` says (recorded in the run log; the first image by default),
the same rule the run's own intervals used (`medharness.scoring.recipe.cluster_of`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from medharness.core.records import ResultRow
from medharness.runs.runlog import RunDir
from medharness.scoring.recipe import cluster_of


@dataclass(frozen=True)
class Scores:
    """One metric's per-sample values (unscored samples left out) and each sample's cluster."""

    values: dict[str, float]
    clusters: dict[str, str]

    @property
    def binary(self) -> bool:
        return bool(self.values) and set(self.values.values()) <= {0.0, 1.0}


@dataclass
class RowCache:
    """Rows of each (run directory, task), read on first use."""

    _rows: dict[tuple[Path, str], list[ResultRow]] = field(default_factory=dict)

    def rows(self, run: RunDir, task: str) -> list[ResultRow]:
        key = (run.path.resolve(), task)
        if key not in self._rows:
            self._rows[key] = run.rows(task) if run.task_file(task).is_file() else []
        return self._rows[key]

    def scores(self, run: RunDir, task: str, metric: str, group: tuple[str, str] | None = None) -> Scores:
        values: dict[str, float] = {}
        clusters: dict[str, str] = {}
        entry = run.log.tasks.get(task)
        cluster_by = (entry.cluster_by if entry is not None else None) or "image"
        for row in self.rows(run, task):
            if group is not None and (group[0] not in row.sample.meta
                                      or str(row.sample.meta[group[0]]) != group[1]):
                continue
            value = row.scores.get(metric)
            if value is None or math.isnan(value):
                continue
            values[row.sample.id] = value
            clusters[row.sample.id] = cluster_of(row.sample, cluster_by)
        return Scores(values, clusters)
