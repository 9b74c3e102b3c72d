"""k-shot subsets, pinned sample lists (--samples) and image ablations (--ablate)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medharness.backends.inputs import ImageLoader
from medharness.cli import main
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import RunSettings
from medharness.runs.pipeline import RunConfig, Runner
from medharness.taskfiles.ablation import partners
from medharness.taskfiles.splits import kshot, read_sample_ids, select_pinned
from medharness.taskfiles.task import load_task


@pytest.fixture(scope="module")
def size_train() -> list:
    return load_task("phantom_size").load_samples("train")


def test_kshot_per_class_stable_and_nested(size_train: list) -> None:
    five = kshot(size_train, 5, seed=0)
    assert Counter(s.target for s in five) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert [s.id for s in kshot(size_train, 5, seed=0)] == [s.id for s in five]
    assert {s.id for s in five} <= {s.id for s in kshot(size_train, 10, seed=0)}
    assert {s.id for s in five} != {s.id for s in kshot(size_train, 5, seed=1)}
    with pytest.raises(DataError, match="k >= 1"):
        kshot(size_train, 0)


def test_split_command_writes_a_pinned_list_that_run_accepts(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    ids = tmp_path / "k2.json"
    assert main(["split", "--task", "phantom_size", "--kshot", "2", "--output", str(ids)]) == 0
    assert "wrote 8 train sample ids (2 per class, seed 0)" in capsys.readouterr().out
    config = RunConfig(model="baseline:majority", tasks="phantom_size", samples_file=str(ids),
                       overrides={"phantom_size": {"split": "train"}})
    run = Runner(config, output=tmp_path / "run").run()
    assert [r.sample_id for r in run.rows("phantom_size")] == json.loads(ids.read_text())["phantom_size"]


def test_sample_id_files(tmp_path: Path) -> None:
    text = tmp_path / "ids.txt"
    text.write_text("# pinned\ncount-00001\nphantom_side\tside-00002\n")
    assert read_sample_ids(text) == {"*": ["count-00001"], "phantom_side": ["side-00002"]}
    listing = tmp_path / "ids.json"
    listing.write_text('["a", 3]')
    assert read_sample_ids(listing) == {"*": ["a", "3"]}
    listing.write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a list of ids"):
        read_sample_ids(listing)
    samples = load_task("phantom_count").load_samples()
    with pytest.raises(DataError,
                       match="1 id\\(s\\) for task phantom_count are not in it, e.g. \\['nope'\\]"):
        select_pinned("phantom_count", samples, {"phantom_count": ["count-00003", "nope"]}, listing)
    chosen = select_pinned("phantom_count", samples, {"*": ["count-00009", "count-00003"]}, listing)
    assert [s.id for s in chosen] == ["count-00003", "count-00009"]  # dataset order


def test_partners_are_a_seeded_derangement() -> None:
    ids = [str(i) for i in range(50)]
    mapping = partners(ids, seed=1)
    assert sorted(mapping) == sorted(ids) and sorted(mapping.values()) == sorted(ids)
    assert all(k != v for k, v in mapping.items())
    assert mapping == partners(ids, seed=1) and mapping != partners(ids, seed=2)
    with pytest.raises(ConfigError, match="at least two samples"):
        partners(["only"], seed=0)


@pytest.mark.parametrize("mode", ["blank", "noise", "shuffle"])
def test_ablations_replace_the_image(tmp_path: Path, mode: str) -> None:
    task = load_task("phantom_presence")
    samples = task.load_samples()[:6]
    images = ImageLoader(task, samples, ablate=mode, seed=5)
    for sample in samples:
        original = np.asarray(task.open_image(sample.images[0]))
        (shown,) = images(sample, list(sample.images))
        shown = np.asarray(shown)
        assert shown.shape == original.shape and not np.array_equal(shown, original)
        if mode == "blank":
            assert shown.max() == 0
        if mode == "noise":
            assert np.array_equal(shown, np.asarray(images(sample, list(sample.images))[0]))
        if mode == "shuffle":
            partner = images.partner(sample)
            assert partner.id != sample.id
            assert np.array_equal(shown, np.asarray(task.open_image(partner.images[0])))


def test_ablation_is_recorded_and_part_of_resume_identity(tmp_path: Path) -> None:
    config = RunConfig(model="baseline:majority", tasks="phantom_presence", limit=4, ablate="blank")
    run = Runner(config, output=tmp_path / "r").run()
    assert isinstance(run.log.config, RunSettings) and run.log.config.ablate == "blank"
    assert run.log.tasks["phantom_presence"].ablation == "blank"
    other = RunConfig(model="baseline:majority", tasks="phantom_presence", limit=4, ablate="noise")
    with pytest.raises(ConfigError, match="ablate: 'blank' -> 'noise'"):
        Runner(other, output=tmp_path / "r", resume=True).run()
    with pytest.raises(ConfigError, match="unknown ablation 'fog'"):
        Runner(RunConfig(model="baseline:majority", tasks="phantom_presence", ablate="fog"),
               output=tmp_path / "x")


def test_blank_ablation_with_a_real_tiny_model(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    config = RunConfig(model=str(tiny_models["qwen2_vl"]), tasks="phantom_presence", limit=4, ablate="blank",
                       max_new_tokens=4)
    rows = Runner(config, output=tmp_path / "r").run().rows("phantom_presence")
    assert len(rows) == 4 and all(r.generation.error is None for r in rows)
