"""Paths inside an output folder: the one containment rule, and the one way a folder the tool will write
again is cleared.

A name from a user file (a task, a cell id) becomes part of a path only through `inside`, which refuses a name
that would leave the output folder (an absolute path, `..`, a symlink that points out). A folder already there
is never deleted: `set_aside` renames it into `OUTPUT/.set-aside/`, so nothing the user made, and nothing the
tool computed, is lost. Only a temporary folder that this process created itself is removed (`remove_own`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from medharness.core.errors import ConfigError

SET_ASIDE = ".set-aside"


def _contained(path: Path, root: Path) -> bool:
    """Whether `path` lies strictly below `root`, both with symlinks resolved."""
    real_root, real = root.resolve(), path.resolve()
    return real != real_root and real.is_relative_to(real_root)


def _plain(part: str) -> bool:
    return part not in ("", ".", "..") and "/" not in part and os.sep not in part and "\0" not in part


def inside(root: Path, *parts: str) -> Path:
    """`root / parts...`, each part a plain name (no separator, not `.` or `..`), refused (ConfigError) unless
    the path, symlinks resolved, lies strictly below `root`."""
    path = root.joinpath(*parts)
    if not all(_plain(p) for p in parts) or not _contained(path, root):
        raise ConfigError(f"{'/'.join(parts)!r} would leave the output folder {root}: a name that becomes a "
                          "path must be a plain name (no '/', no '..')")
    return path


def set_aside(path: Path, root: Path) -> Path | None:
    """Move the folder or file `path` (below `root`) out of the way, into `root/.set-aside/`; return where it
    went (None: nothing was there). Refused for anything outside `root`: a path that climbs out or a symlink
    (the link itself is what would move, so its target is never touched, but it is not ours either)."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not _contained(path, root):
        raise ConfigError(f"refusing to move {path}: it is not a folder of the output folder {root} (a "
                          "symlink or a path outside it); remove it yourself if it is not needed")
    relative = path.resolve().relative_to(root.resolve())
    target = root / SET_ASIDE / f"{'--'.join(relative.parts)}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def remove_own(path: Path, root: Path) -> None:
    """Remove a temporary folder that this process created below `root` (missing: nothing to do)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not _contained(path, root):
        raise ConfigError(f"refusing to remove {path}: it is not a temporary folder of {root}")
    shutil.rmtree(path)
