"""A sweep's sample choices (issue 21, VRFT-Aug items 12-13): `whole_split` trains chosen k-shot cells on the
whole training split (the paper's "except for RetinaMNIST and BreastMNIST"); `eval.per_class` scores every run
on one seeded class-balanced subset of the eval split, written once by the real `medharness split` and given
to `medharness run` as `--samples`."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from medharness.core.errors import ConfigError
from medharness.taskfiles.task import load_task
from medharness.trainers.sweeps.schema import expand, load_sweep
from medharness.trainers.sweeps.stages import Stages


def sweep_file(tmp_path: Path, extra: str) -> Path:
    file = tmp_path / "s.yaml"
    file.write_text("model: tiny\ntasks: [phantom_presence]\nrecipes: [sft]\n" + extra, encoding="utf-8")
    return file


@pytest.mark.parametrize(("extra", "message"), [
    ("eval: {per_class: 4, samples: ids.json}\n", "samples (a pinned id file) and per_class"),
    ("eval: {per_class: {phantom_presence: 0}}\n", "per_class is k >= 1"),
    ("shots: [4]\nwhole_split: {phantom_presence: [8]}\n", "[8] are not among the sweep's shots"),
])
def test_contradictory_choices_are_refused(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_sweep(sweep_file(tmp_path, extra))


def test_whole_split_cells_keep_their_ids_and_skip_the_split(tmp_path: Path) -> None:
    file = sweep_file(tmp_path, "shots: [4, 8]\nwhole_split: {phantom_presence: [8]}\n")
    sweep = load_sweep(file)
    stages = Stages(sweep, file, tmp_path / "out", resume=False)
    cells = {c.shots: c for c in expand(sweep)}
    assert cells[8].id == "sft-phantom_presence-k8-s0" and stages.split_file(cells[8]) is None
    assert stages.split_file(cells[4]) == stages.dir.split_file("phantom_presence", 4, 0)
    assert [c.args[0] for c in stages.cell_commands(cells[8])] == ["train", "run"]
    assert "--samples" not in stages.train_args(cells[8], "m", None, False)
    assert [c.args[0] for c in stages.cell_commands(cells[4])] == ["split", "train", "run"]


def test_eval_subset_is_drawn_once_and_scored_by_every_run(tmp_path: Path) -> None:
    """The real split and run commands: 5 test scans per gold answer (seed 3), the baseline row scores exactly
    those ids; a task the mapping does not name keeps its whole split."""
    file = sweep_file(tmp_path, "eval: {per_class: {phantom_presence: 5}, subset_seed: 3}\n")
    sweep = load_sweep(file)
    stages = Stages(sweep, file, tmp_path / "out", resume=False)
    try:
        subset = stages.eval_subset_file("phantom_presence")
        assert subset == stages.dir.split_file("phantom_presence-test", 5, 3)
        assert stages.eval_subset_file("phantom_side") is None
        assert "--samples" not in stages.eval_args("m", "phantom_side", tmp_path / "x", False)
        commands = stages.reference_commands("base", None, ["phantom_presence"])
        assert [c.args[:2] for c in commands] == [["split", "--task"], ["run", "--model"]]
        assert commands[0].args[commands[0].args.index("--split") + 1] == "test"
        out = stages.dir.reference_dir("baseline-majority", "phantom_presence")
        stages.evaluate("baseline:majority", "phantom_presence", out, tmp_path / "eval.log", baseline=True)
    finally:
        stages.close()
    ids = json.loads(subset.read_text(encoding="utf-8"))["phantom_presence"]
    gold = {s.id: s.target for s in load_task("phantom_presence").load_samples()}
    assert Counter(gold[i] for i in ids) == {"yes": 5, "no": 5}
    rows = [json.loads(line) for line in
            (out / "samples" / "phantom_presence.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["sample"]["id"] for r in rows) == sorted(ids)
