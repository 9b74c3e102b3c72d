"""The sweep file's schema and its expansion into cells (more of it: test_cli.py, test_board.py)."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from medharness.core.errors import ConfigError
from medharness.trainers.sweeps.schema import MAX_CELLS, expand, load_sweep


def test_a_grid_of_a_million_cells_is_refused_before_one_is_built(tmp_path: Path) -> None:
    """1000 shots x 1000 seeds used to run the dry run out of memory (or print nothing for minutes): the
    cells are counted from the axes first."""
    file = tmp_path / "s.yaml"
    file.write_text("model: m\ntasks: [phantom_presence]\nrecipes: [sft, grpo]\n"
                    f"shots: {list(range(1, 1001))}\nseeds: {list(range(1000))}\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match=r"s.yaml: the grid has 2,000,000 cells .* more than the 10,000"):
        load_sweep(file)  # loading expands the grid: the dry run and the real run alike
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB: nothing was built
    file.write_text("model: m\ntasks: [phantom_presence]\nrecipes: [sft]\n"
                    f"seeds: {list(range(MAX_CELLS))}\n")
    assert len(expand(load_sweep(file))) == MAX_CELLS  # the limit itself is allowed
