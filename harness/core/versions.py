"""The installed versions of packages, as run.json (`runs/runlog.py`) and checkpoint manifests
(`trainers/checkpoints.py`) record them, each with its own list of packages."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import metadata


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """{name: version} for those of `names` that are installed, in the order given (one not installed is left
    out). Read once per process for each list: a training run records them at every checkpoint."""
    return dict(_versions(tuple(names)))


@functools.cache
def _versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for name in names:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(out)
