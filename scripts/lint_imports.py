"""Check the import contracts in pyproject.toml ([tool.importlinter]; see docs/design.md, "Layers").

`medharness` is assembled from several folders (pyproject `package-dir`: `harness/` is `medharness`, `judges/`
is `medharness.judges`, ...), but import-linter reads a package from ONE folder, so a bare `lint-imports` would
not see the judges, trainers, leaderboards or tasks. This script builds that one folder as a tree of symlinks
in a temporary directory, puts it first on the path and runs `lint-imports` (arguments are passed on).
Usage: python scripts/lint_imports.py [--verbose]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    raise SystemExit("import-linter, and so this check, needs Python 3.11 or newer") from None

ROOT = Path(__file__).resolve().parents[1]


def build_tree(target: Path) -> None:
    """`target/<package path>` for every entry of `package-dir`: the root package's files linked one by one,
    and each package from another folder linked in whole."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    for name, folder in sorted(package_dir.items(), key=lambda item: item[0].count(".")):
        source, path = (ROOT / folder).resolve(), target.joinpath(*name.split("."))
        if path.exists():  # already inside a linked folder: it must be the same one
            if path.resolve() != source:
                raise SystemExit(f"package-dir: {name} -> {folder} is not where its parent package puts it")
            continue
        if "." not in name:
            path.mkdir(parents=True)
            for child in source.iterdir():
                if child.name != "__pycache__":
                    (path / child.name).symlink_to(child, target_is_directory=child.is_dir())
        else:
            path.symlink_to(source, target_is_directory=True)


def main() -> int:
    from importlinter.cli import lint_imports_command

    with tempfile.TemporaryDirectory(prefix="medharness-imports-") as tmp:
        build_tree(Path(tmp))
        sys.path.insert(0, tmp)  # before the editable install's finder, which comes after the path
        os.chdir(ROOT)
        sys.argv = ["lint-imports", "--no-cache", *sys.argv[1:]]
        try:
            lint_imports_command()
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
