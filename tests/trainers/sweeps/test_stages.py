"""A sweep never removes or writes a folder it does not own: names from the sweep file that would leave the
sweep folder are refused by the schema (the hostile sweep corpus, tests/data/fuzz/sweeps/), every stage path
is checked again when it is built, and a folder a stage starts afresh is moved aside, never deleted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.core.paths import SET_ASIDE
from medharness.trainers.sweeps import DEMO
from medharness.trainers.sweeps.schema import load_sweep
from medharness.trainers.sweeps.stages import StageFailed, Stages

CORPUS = sorted((Path(__file__).resolve().parents[2] / "data" / "fuzz" / "sweeps").glob("*.yaml"))


def victim_folder(tmp_path: Path) -> Path:
    """A folder with data in it, outside every sweep folder of the test."""
    victim = tmp_path / "victim"
    (victim / "images").mkdir(parents=True)
    (victim / "images" / "scan.png").write_bytes(b"\x89PNG not really")
    (victim / "run.json.bak").write_text("{}", encoding="utf-8")
    return victim


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CORPUS, ids=lambda p: p.stem)
@pytest.mark.parametrize("mode", ["--dry-run", "run"])
def test_hostile_sweep_names_are_refused_before_anything_is_touched(
        case: Path, mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = victim_folder(tmp_path)
    before = contents(victim)
    work = tmp_path / "a" / "b" / "c"  # `../` from the sweep's cells/ID/eval/ folders reaches tmp_path
    work.mkdir(parents=True)
    expect = case.read_text(encoding="utf-8").splitlines()[0].removeprefix("# expect: ")
    text = (case.read_text(encoding="utf-8").replace("{victim}", str(victim))
            .replace("{victim_name}", victim.name))
    sweep_file = work / case.name
    sweep_file.write_text(text, encoding="utf-8")
    out = work / "sweep"
    argv = ["train-then-eval", "--sweep", str(sweep_file), "--output", str(out)]
    assert main([*argv, "--dry-run"] if mode == "--dry-run" else argv) == 2
    err = capsys.readouterr().err
    assert f"{sweep_file}:" in err and expect in err
    assert "cannot be used as a file name" in err
    assert "Traceback" not in err
    assert contents(victim) == before
    assert not out.exists()


@pytest.fixture()
def stages(tmp_path: Path) -> Stages:
    root = tmp_path / "sweep"
    root.mkdir()
    return Stages(load_sweep(DEMO), DEMO, root, resume=False)


def test_stage_paths_that_leave_the_sweep_are_refused(stages: Stages, tmp_path: Path) -> None:
    """The schema is the first guard; the paths are checked again where they are built (a Cell made in
    code)."""
    victim = victim_folder(tmp_path)
    for build in (lambda: stages.dir.eval_dir("c", str(victim)),
                  lambda: stages.dir.eval_dir("c", "../../../../victim"),
                  lambda: stages.dir.reference_dir("base", "../../victim"),
                  lambda: stages.dir.cell_dir(".."), lambda: stages.dir.cell_dir(""),
                  lambda: stages.dir.split_file("../../victim/x", 2, 0)):
        with pytest.raises(ConfigError, match="would leave the output folder"):
            build()
    # a cell folder that is a symlink to a folder outside: its paths resolve outside, so they are refused
    (stages.root / "cells").mkdir()
    os.symlink(victim, stages.root / "cells" / "linked")
    with pytest.raises(ConfigError, match="would leave the output folder"):
        stages.dir.train_dir("linked")
    assert (victim / "images" / "scan.png").is_file()


def test_an_unfinished_folder_is_moved_aside_not_deleted(stages: Stages,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage folder without its run.json (or train.json) is started afresh; what was in it is kept."""
    out = stages.dir.eval_dir("cell", "phantom_presence")
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    started: list[list[str]] = []

    def call(argv: list[str], log_file: Path) -> None:
        started.append(argv)
        raise StageFailed("stopped by the test")

    monkeypatch.setattr(stages, "_call", call)
    with pytest.raises(StageFailed):
        stages.evaluate("baseline:majority", "phantom_presence", out, stages.root / "x.log", baseline=True)
    assert started and not out.exists()
    (kept,) = (stages.root / SET_ASIDE).iterdir()
    assert kept.name.startswith("cells--cell--eval--phantom_presence.")
    assert (kept / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_symlinked_stage_folder_is_neither_moved_nor_followed(stages: Stages, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    victim = victim_folder(tmp_path)
    before = contents(victim)
    out = stages.dir.eval_dir("cell", "phantom_presence")
    out.parent.mkdir(parents=True)
    os.symlink(victim, out)
    monkeypatch.setattr(stages, "_call", lambda argv, log_file: pytest.fail("the stage must not start"))
    with pytest.raises(ConfigError, match="refusing to move"):
        stages.evaluate("baseline:majority", "phantom_presence", out, stages.root / "x.log", baseline=True)
    assert out.is_symlink() and contents(victim) == before


@pytest.mark.parametrize(("eval_tasks", "message"), [
    ('{"/data/scans": [phantom_presence]}',
     "s.yaml:3: eval_tasks./data/scans.[key]: eval_tasks '/data/scans' cannot"),
    ("3", "s.yaml:3: eval_tasks.0: Input should be a valid string"),
    ("{a: 3}", "s.yaml:3: eval_tasks.a.0: Input should be a valid string"),
])
def test_a_union_s_error_names_the_branch_the_value_has(eval_tasks: str, message: str,
                                                        tmp_path: Path) -> None:
    """`eval_tasks` is a list or a mapping: the error is about the given form, without pydantic's branch
    names."""
    file = tmp_path / "s.yaml"
    file.write_text(f"model: tiny\ntasks: [phantom_presence]\neval_tasks: {eval_tasks}\nrecipes: [sft]\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_sweep(file)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and lines[1].strip().startswith(f"{tmp_path}/{message}")
    assert "function-after" not in str(caught.value) and "valid list" not in str(caught.value)
