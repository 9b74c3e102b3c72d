"""Every sweep file shipped in trainers/sweeps/ passes `train-then-eval --dry-run`: its cells resolve, every
cell's config constructs (down to TRL's own checks where TRL is installed), and every task, prompt variant,
preset, metric and reference file it names exists. Data that is not on this machine is a warning, not a
failure (the paper sweeps read datasets a CI machine does not have). Every reference file is used by a
sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from medharness.cli import main
from medharness.trainers.sweeps.schema import load_sweep
from medharness.trainers.sweeps.table import load_reference

SWEEPS = Path(__file__).resolve().parents[3] / "trainers" / "sweeps"
FILES = sorted(SWEEPS.glob("*.yaml"))


def test_there_are_shipped_sweeps() -> None:
    assert len(FILES) >= 2 and (SWEEPS / "demo.yaml") in FILES


@pytest.mark.parametrize("file", FILES, ids=[f.stem for f in FILES])
def test_dry_run(file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train-then-eval", "--sweep", str(file), "--dry-run", "--output", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "problem:" not in captured.err and "reference row(s): ready" in captured.out
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def test_every_reference_file_is_used_and_loads() -> None:
    used = {(SWEEPS / s.reference).resolve() for s in map(load_sweep, FILES) if s.reference}
    for file in sorted((SWEEPS / "references").glob("*.yaml")):
        ref = load_reference(file)
        assert file.resolve() in used, f"{file.name} is not the reference of any shipped sweep"
        assert ref.source.strip() and ref.rows
