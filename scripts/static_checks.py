"""Static checks of the installed package's layout: the import contracts and the types.

    python scripts/static_checks.py imports [ARGS]   # lint-imports: pyproject [tool.importlinter]
                                                     # (docs/design.md)
    python scripts/static_checks.py types [ARGS]     # mypy -p medharness: pyproject [tool.mypy]
    python scripts/static_checks.py cycles           # no strongly connected modules, type-only imports
                                                     # included
    python scripts/static_checks.py tracked          # no source file of the package is ignored by git
    python scripts/static_checks.py all              # all four (what CI runs)

`medharness` is assembled from several folders (pyproject `package-dir`: `harness/` is `medharness`, `judges/`
is `medharness.judges`, ...), but import-linter and mypy read a package from ONE folder, so a bare
`lint-imports` or `mypy -p medharness` would not see the judges, trainers, leaderboards or tasks. This script
builds that one folder as a tree of symlinks in build/static-tree (new modules need no reinstall) and runs
the tool on it; mypy's file names are mapped back to the repository's paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


LINT_IMPORTS = ("import sys; from importlinter.cli import lint_imports_command; "
                "sys.argv = ['lint-imports', '--no-cache', *sys.argv[1:]]; lint_imports_command()")


def check_imports(tree: Path, args: list[str]) -> int:
    return subprocess.run([sys.executable, "-c", LINT_IMPORTS, *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(tree)}, check=False).returncode


def check_types(tree: Path, args: list[str]) -> int:
    """mypy on the linked tree; its paths are rewritten to the source folders (longest package first)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    linked = {n: tree.joinpath(*n.split(".")) for n in package_dir}
    prefixes = sorted([(f"{form}/", f"{package_dir[n].rstrip('/')}/") for n, path in linked.items()
                       for form in (str(path), str(path.relative_to(ROOT)))], key=lambda p: -len(p[0]))
    done = subprocess.run([sys.executable, "-m", "mypy", "-p", "medharness", *args], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, "MYPYPATH": str(tree)}, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        for linked, source in prefixes:
            line = line.replace(linked, source)
        print(line)
    return done.returncode


FIND_CYCLES = """
import json, grimp, numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
graph = grimp.build_graph("medharness", exclude_type_checking_imports=False, cache_dir=None)
modules = sorted(graph.modules)
index = {m: i for i, m in enumerate(modules)}
edges = [(index[m], index[t]) for m in modules for t in graph.find_modules_directly_imported_by(m)
         if t in index]
rows, cols = zip(*edges) if edges else ((), ())
matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(modules), len(modules)))
count, labels = connected_components(matrix, directed=True, connection="strong")
groups = [[modules[i] for i in np.flatnonzero(labels == c)] for c in range(count)]
print(json.dumps([g for g in groups if len(g) > 1]))
"""


def check_cycles(tree: Path) -> int:
    """Strongly connected groups of modules (grimp's graph with every import, type-only ones included)."""
    done = subprocess.run([sys.executable, "-c", FIND_CYCLES], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stdout + done.stderr)
        return done.returncode
    found = [sorted(group) for group in json.loads(done.stdout)]
    for group in found:
        print(f"import cycle: {' <-> '.join(group)}")
    print(f"cycles: {len(found)} strongly connected group(s) of modules; {'FAILED' if found else 'ok'}")
    return 1 if found else 0


def check_tracked() -> int:
    """Source files in the package folders that git ignores: a clean clone would lack them (a sub-package
    named like an ignored output folder once lost its __init__.py this way)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = sorted(set(config["tool"]["setuptools"]["package-dir"].values()))
    listed = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--",
                             *folders],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        print(f"tracked: not a git checkout, skipped ({listed.stderr.strip()})")
        return 0
    lost = [name for name in listed.stdout.splitlines()
            if "__pycache__" not in name and name.endswith((".py", ".yaml", ".txt", ".json", ".md"))]
    for name in lost:
        print(f"ignored by git, so missing from a clean clone: {name}")
    gone = [name for name in config["tool"]["setuptools"]["packages"] if not _tracked_files(config, name)]
    for name in gone:  # a clean install fails on a listed package whose folder is not in the clone
        print(f"pyproject lists package {name}, but git tracks no file in its folder")
    print(f"tracked: {len(lost)} source file(s) ignored by git, {len(gone)} listed package(s) without files; "
          f"{'FAILED' if lost or gone else 'ok'}")
    return 1 if lost or gone else 0


def _tracked_files(config: dict, package: str) -> list[str]:
    """The files git tracks in a listed package's folder (`package-dir` maps the package name to it)."""
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    root = max((p for p in package_dir if package == p or package.startswith(p + ".")), key=len)
    folder = Path(package_dir[root], *[part for part in package[len(root):].split(".") if part])
    listed = subprocess.run(["git", "ls-files", "--", str(folder)], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    return listed.stdout.split()


def main() -> int:
    what, args = (sys.argv[1] if len(sys.argv) > 1 else "all"), sys.argv[2:]
    if what not in ("imports", "types", "cycles", "tracked", "all"):
        raise SystemExit(__doc__)
    tree = ROOT / "build" / "static-tree"  # a fixed place: mypy's incremental cache keys on file paths
    shutil.rmtree(tree, ignore_errors=True)
    build_tree(tree)
    codes = []
    if what in ("tracked", "all"):
        codes.append(check_tracked())
    if what in ("imports", "all"):
        codes.append(check_imports(tree, args))
    if what in ("types", "all"):
        codes.append(check_types(tree, args))
    if what in ("cycles", "all"):
        codes.append(check_cycles(tree))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
