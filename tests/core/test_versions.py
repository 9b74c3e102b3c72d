"""`package_versions`: the installed versions of a list of packages, the one reader behind run.json's and the
checkpoint manifests' `versions`."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from medharness.core.versions import package_versions
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.runlog import PACKAGES


def test_installed_packages_in_the_order_given_and_the_missing_left_out() -> None:
    names = ("pydantic", "no-such-package-medharness", "pyyaml")
    found = package_versions(names)
    assert list(found) == ["pydantic", "pyyaml"]
    assert found == {"pydantic": metadata.version("pydantic"), "pyyaml": metadata.version("pyyaml")}
    found["pydantic"] = "0"  # each call returns its own dict: the cache cannot be changed through it
    assert package_versions(list(names))["pydantic"] == metadata.version("pydantic")


def test_run_json_versions_are_python_then_the_run_packages(tmp_path: Path) -> None:
    Runner(RunConfig(model="baseline:majority", tasks="phantom_presence", limit=2, cache=False),
           output=tmp_path / "r").run()
    versions = json.loads((tmp_path / "r" / "run.json").read_text())["versions"]
    assert versions == {"python": platform.python_version(), **package_versions(PACKAGES)}
    assert list(versions) == ["python", *[p for p in PACKAGES if p in versions]] and "pydantic" in versions
