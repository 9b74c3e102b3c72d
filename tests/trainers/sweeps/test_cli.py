"""Train-then-eval sweeps: the strict schema, cell expansion, stage commands, the dry run, the board,
(with a fake trainer in place of `train`, tests/support/fake_train.py) skip / resume / --cell / merge logic,
and one real end-to-end sweep (the real `medharness train`, SFT then GRPO-from-SFT). The evaluations are real
`medharness run` subprocesses on a tiny model."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from medharness.checkpoints.lineage import file_hash
from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.core.records import MetricSummary, RunSettings, RunStatus, TaskEntry, TaskSummary
from medharness.runs.folders import SweepDir
from medharness.runs.runlog import RunDir
from medharness.taskfiles.task import load_task
from medharness.trainers.cli import parse_train_args, train_request
from medharness.trainers.run import TrainRequest
from medharness.trainers.sweeps import DEMO
from medharness.trainers.sweeps import stages as sweep_exec
from medharness.trainers.sweeps.board import every_row, render
from medharness.trainers.sweeps.schema import expand, load_sweep
from medharness.trainers.sweeps.stages import Command, Stages, reference_rows

SUPPORT = Path(__file__).resolve().parents[2] / "support"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GRID = """\
name: grid
model: {model}
tasks: [phantom_presence]
shots: [all, 2]
seeds: [0, 1]
presets: [null, lora]
recipes:
  - sft
  - {{recipe: grpo, from: sft}}
  - {{recipe: dpo, id: dpo-fixed, preset: dpo_lora}}
common_presets: [tiny_cpu]
overrides: [trl.learning_rate=1e-4]
max_steps: 3
eval: {{limit: 2, batch_size: 2}}
baselines: [majority]
"""


# -- schema and cells ---------------------------------------------------------------------------------------

def test_grid_expands_to_stable_cells(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path / "s.yaml", GRID.format(model="tiny")))
    cells = expand(sweep)
    # sft and grpo: 2 presets x 2 shots x 2 seeds each; dpo: its fixed preset x 2 shots x 2 seeds
    assert len(cells) == 8 + 8 + 4
    ids = [c.id for c in cells]
    assert "sft-phantom_presence-kall-s0" in ids and "sft-lora-phantom_presence-k2-s1" in ids
    assert "dpo-fixed-dpo_lora-phantom_presence-kall-s0" in ids
    child = next(c for c in cells if c.id == "grpo-from-sft-lora-phantom_presence-k2-s1")
    assert child.parent == "sft-lora-phantom_presence-k2-s1" and child.stage == 2
    assert ids.index(child.parent) < ids.index(child.id)  # parents first
    assert [c.id for c in expand(sweep)] == ids  # stable


def test_filters_keep_the_parents(tmp_path: Path) -> None:
    text = GRID.format(model="tiny") + "cells: {only: ['grpo-*-kall-s0']}\n"
    ids = [c.id for c in expand(load_sweep(write(tmp_path / "s.yaml", text)))]
    assert ids == ["sft-phantom_presence-kall-s0", "sft-lora-phantom_presence-kall-s0",
                   "grpo-from-sft-phantom_presence-kall-s0", "grpo-from-sft-lora-phantom_presence-kall-s0"]


@pytest.mark.parametrize(("text", "message"), [
    ("model: m\ntasks: [t]\nrecipes: [sft]\nseed: [0]\n", r"s.yaml:4: unknown key 'seed'"),
    ("model: m\ntasks: [t]\nrecipes:\n  - {recipe: sft, form: x}\n",
     r"s.yaml:4: unknown key 'recipes.0.*form'"),
    ("model: m\ntasks: [t]\nrecipes: [sft]\nshots: [0]\n", r"s.yaml:4: shots"),
    ("model: m\ntasks: [t]\nrecipes: [{recipe: grpo, from: sft}, sft]\n", "not a recipe listed before it"),
    ("model: m\ntasks: [t]\nrecipes: [sft, sft]\n", "two recipes have the id 'sft'"),
    ("model: m\ntasks: [t]\nrecipes: [sft]\noverrides: [lr]\n", "KEY=VALUE"),
])
def test_strict_schema_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_sweep(write(tmp_path / "s.yaml", text))


def test_stage_commands(tmp_path: Path) -> None:
    """One builder per stage command: the stage runs it, the dry run parses it back into `train`'s request,
    --print-commands prints it."""
    file = write(tmp_path / "s.yaml", GRID.format(model="tiny") + "launch: {launcher: accelerate, "
                                                                  "num_processes: 2, deepspeed: zero2}\n")
    sweep = load_sweep(file)
    stages = Stages(sweep, file, tmp_path / "out", resume=False)
    cell = next(c for c in expand(sweep) if c.id == "sft-lora-phantom_presence-k2-s1")
    train = stages.train_args(cell, "/m", tmp_path / "ids.json", resume=True)
    assert train[:11] == ["train", "--recipe", "sft", "--task", "phantom_presence", "--model", "/m",
                          "--seed", "1", "--output", str(tmp_path / "out" / "cells" / cell.id / "train")]
    assert train[11:] == ["--preset", "lora", "--preset", "tiny_cpu", "--samples", str(tmp_path / "ids.json"),
                          "--max-steps", "3", "-C", "trl.learning_rate=1e-4", "--launcher", "accelerate",
                          "--num-processes", "2", "--deepspeed", "zero2", "--resume"]
    assert not (tmp_path / "out").exists()  # building writes nothing (train writes the launch config)
    args = parse_train_args(train)
    assert (args.launcher, args.num_processes, args.deepspeed) == ("accelerate", 2, "zero2")
    assert train_request(args) == TrainRequest(
        recipe="sft", presets=["lora", "tiny_cpu"], overrides=["trl.learning_rate=1e-4"],
        task="phantom_presence", model="/m", samples_file=tmp_path / "ids.json", seed=1, max_steps=3,
        output=tmp_path / "out" / "cells" / cell.id / "train", resume=True)
    run = stages.eval_args("/ckpt", "phantom_presence", tmp_path / "e", resume=False)
    assert run == ["run", "--model", "/ckpt", "--tasks", "phantom_presence", "--output", str(tmp_path / "e"),
                   "--no-progress", "--batch-size", "2", "--backend", "auto", "--limit", "2"]
    assert Command(run).argv() == [*sweep_exec.PROGRAM, *run]  # a subprocess stage
    assert Command(run).text() == shlex.join(["medharness", *run])


def test_print_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write(tmp_path / "s.yaml", GRID.format(model="tiny"))
    out = tmp_path / "o"
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if line.startswith("medharness ")]
    assert len(commands) == 2 + 20 + 1  # reference rows, cells, the final merge
    assert commands[0].endswith("--cell reference-base --resume")
    assert commands[-1] == f"medharness train-then-eval --sweep {file} --output {out} --resume"
    assert lines.index("# stage 1") < lines.index("# stage 2 (each after its parent cell of stage 1)")
    assert not out.exists()
    # --data-dir reaches every printed command (they used to drop it, and failed at `split`)
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--print-commands",
                 "--data-dir", str(tmp_path / "data")]) == 0
    given = [line for line in capsys.readouterr().out.splitlines() if line.startswith("medharness ")]
    assert len(given) == len(commands) and all(f"--data-dir {tmp_path / 'data'} " in c for c in given)
    # under each cell, its stages as the sweep runs them: split, train (from its parent's final), evals
    sweep = load_sweep(file)
    stages = Stages(sweep, file, out, resume=False)
    cell = next(c for c in expand(sweep) if c.id == "grpo-from-sft-lora-phantom_presence-k2-s1")
    at = lines.index(shlex.join(["medharness", "train-then-eval", "--sweep", str(file), "--output", str(out),
                                 "--cell", cell.id, "--resume"]))
    split = out / "splits" / "phantom_presence-k2-s1.json"
    parent_final = out / "cells" / "sft-lora-phantom_presence-k2-s1" / "train" / "final"
    final, evaluated = out / "cells" / cell.id / "train" / "final", out / "cells" / cell.id / "eval"
    assert lines[at + 1:at + 4] == ["#   " + shlex.join(["medharness", *args]) for args in (
        ["split", "--task", "phantom_presence", "--kshot", "2", "--seed", "1", "--output", str(split)],
        stages.train_args(cell, str(parent_final), split, resume=False),
        stages.eval_args(str(final), "phantom_presence", evaluated / "phantom_presence", resume=False))]
    assert not lines[at + 4].startswith("#   ")  # its last stage
    base = lines.index(commands[0])
    assert lines[base + 1] == "#   " + shlex.join(["medharness", *stages.eval_args(
        str((out / "models" / "tiny-tiny").resolve()), "phantom_presence",
        out / "reference" / "base" / "phantom_presence", resume=False)])


def test_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl", reason="the dry run checks recipes against TRL")
    assert main(["train-then-eval", "--dry-run", "--output", str(tmp_path / "o")]) == 0  # the shipped demo
    out = capsys.readouterr().out
    assert "grpo-from-sft-phantom_presence-kall-s0" in out and "ready" in out
    assert not (tmp_path / "o").exists()  # nothing written
    bad = write(tmp_path / "bad.yaml", "model: /no/such/model\ntasks: [phantom_presence, no_such_task]\n"
                                       "recipes: [{recipe: sft, config: missing.yaml}]\nbaselines: [oracle]\n"
                                       "shots: [3]\n")
    assert main(["train-then-eval", "--sweep", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    for text in ("model: /no/such/model does not exist", "train task no_such_task", "missing.yaml",
                 "'oracle'"):
        assert text in err


def test_dry_run_checks_each_cells_trl_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl")
    file = write(tmp_path / "s.yaml", "model: tiny\ntasks: [phantom_presence]\ncommon_presets: [tiny_cpu]\n"
                                      "recipes: [sft, {recipe: grpo, from: sft, "
                                      "overrides: [trl.num_generations=4]}]\n")
    assert main(["train-then-eval", "--sweep", str(file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "cell grpo-from-sft-phantom_presence-kall-s0: " in err and "num_generations (4)" in err
    assert "cell sft-" not in err
    # a seed or learning rate that only torch would refuse (after the folders exist) is a problem here: a
    # seed is refused in the sweep file itself, at its line
    for setting, message in (("seeds: [-1]", "s.yaml:5: seeds.0: Input should be greater than or equal to 0"),
                             ("overrides: [trl.learning_rate=.nan]",
                              "-C trl.learning_rate=.nan: trl.learning_rate = nan: must be a finite number")):
        file = write(tmp_path / "s.yaml", "model: tiny\ntasks: [phantom_presence]\n"
                                          f"common_presets: [tiny_cpu]\nrecipes: [sft]\n{setting}\n")
        assert main(["train-then-eval", "--sweep", str(file), "--dry-run"]) == 2
        assert message in capsys.readouterr().err


def test_a_trained_policy_is_evaluated_with_at_least_its_training_completion_length(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RARL trains to think for 512 tokens while the `reasoning` variants answer in 64: evaluated at 64, every
    answer is cut before `<answer>`. The evaluation budget is raised to the training one (the dry run warns,
    --print-commands and the stage itself pass it); a budget at or above it is left as set."""
    pytest.importorskip("trl")
    grpo = "recipes: [{recipe: grpo, overrides: [trl.max_completion_length=%d]}]\n"
    file = write(tmp_path / "s.yaml", "model: tiny\ntasks: [phantom_presence]\n"
                                      "prompt: {phantom_presence: r1}\n"
                                      "eval_tasks: [phantom_presence, phantom_count]\n" + grpo % 900)
    sweep = load_sweep(file)
    stages = Stages(sweep, file, tmp_path / "o", resume=False)
    (cell,) = expand(sweep)
    assert load_task("phantom_presence", {"prompt": "r1"}).settings().max_new_tokens == 768
    assert stages.eval_budget(cell, "phantom_presence") == (900, 768)
    assert stages.eval_budget(cell, "phantom_count") == (900, 16)  # its plain variant: 16 tokens
    assert main(["train-then-eval", "--sweep", str(file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"warning: cell {cell.id} evaluates phantom_presence with 900 new tokens" in out
    assert main(["train-then-eval", "--sweep", str(file), "--print-commands", "--output",
                 str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "--max-new-tokens 900" in printed
    enough = write(tmp_path / "e.yaml", "model: tiny\ntasks: [phantom_presence]\nprompt: r1\n" + grpo % 4)
    sweep = load_sweep(enough)
    (cell,) = expand(sweep)
    assert Stages(sweep, enough, tmp_path / "e", resume=False).eval_budget(cell, "phantom_presence") == (None,
                                                                                                         None)


def test_dry_run_json_prints_each_cells_train_config_and_evaluation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--dry-run --json`: per cell, the object `train --dry-run --json` prints for the cell's train command
    (the same, key for key), and its evaluations: prompt variant, the budget raised to the training
    completion length, judges, the run command; the reference rows too; nothing written."""
    pytest.importorskip("trl")
    file = write(tmp_path / "s.yaml", "model: tiny\ntasks: [phantom_presence]\n"
                                      "eval_tasks: [phantom_presence, phantom_count]\nshots: [all, 2]\n"
                                      "prompt: {phantom_presence: r1}\nbaselines: [majority]\nrecipes: "
                                      "[{recipe: grpo, overrides: [trl.max_completion_length=900]}]\n")
    out = tmp_path / "o"
    assert main(["train-then-eval", "--sweep", str(file), "--dry-run", "--json", "--output", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert not out.exists() and info["ready"] is True
    whole, kshot = (next(c for c in info["cells"] if c["shots"] == k) for k in (None, 2))
    assert whole["train"]["trl"]["max_completion_length"] == 900 and whole["train"]["prompt"] == "r1"
    argv = shlex.split(whole["train_command"])[1:]
    assert main([*argv, "--dry-run", "--json"]) == 0  # the train command's own dry run: the same object
    assert json.loads(capsys.readouterr().out) == whole["train"]
    assert kshot["train"]["samples"]["file"].endswith(".json") and kshot["train"]["data"]["count"] is None
    assert "split stage" in kshot["train"]["data"]["note"]
    presence = whole["eval"]["phantom_presence"]
    assert (presence["prompt"], presence["max_new_tokens"], presence["budget_raised_from"]) == ("r1", 900,
                                                                                                768)
    assert "--max-new-tokens 900" in presence["command"] and presence["judges"] == []
    assert whole["eval"]["phantom_count"]["max_new_tokens"] == 900
    (base, majority) = info["references"]
    assert (base["id"], majority["model"]) == ("base", "baseline:majority")
    assert base["eval"]["phantom_presence"]["max_new_tokens"] == 768  # not trained: the variant's budget
    assert main(["train-then-eval", "--sweep", str(file), "--json"]) == 2
    assert "give --dry-run too" in capsys.readouterr().err


def test_dry_run_json_names_the_judges_of_a_judged_evaluation(tmp_path: Path) -> None:
    from medharness.trainers.sweeps.check import eval_settings

    file = write(tmp_path / "s.yaml", "model: tiny\ntasks: [reasoning_vqa]\neval_tasks: [vqa_rad]\n"
                                      "eval_prompt: reasoning_judged\nrecipes: [sft]\nbase_row: true\n")
    sweep = load_sweep(file)
    got = eval_settings(sweep, Stages(sweep, file, tmp_path / "o", resume=False), None, "vqa_rad",
                        ("base", None))
    assert got["judges"] == ["rarl_v2:openai:gpt-4o-mini", "rarl_v2:gemini:gemini-1.5-flash"]
    assert "gemini_final" in got["metrics"] and got["prompt"] == "reasoning_judged"


def test_board_mean_and_std_over_seeds(tmp_path: Path) -> None:
    file = write(tmp_path / "s.yaml", "model: m\ntasks: [phantom_presence]\nrecipes: [sft]\n"
                                      "seeds: [0, 1, 2]\nbaselines: [majority]\n")
    sweep = load_sweep(file)
    stages = Stages(sweep, file, tmp_path, resume=False)
    cells = expand(sweep)

    def fake_run(folder: Path, value: float, status: RunStatus = "finished") -> None:
        """A run directory whose typed run log holds one task summary (no model needed)."""
        run = RunDir.create(folder, RunSettings(model="m", tasks="phantom_presence"))
        summary = TaskSummary(task="phantom_presence", task_version="1.0", convention="harness", n=10,
                              n_unparsed=0, metrics={"yes_no_accuracy": MetricSummary(value=value, n=10,
                                                                                         n_unparsed=0)})
        run.set_task("phantom_presence", TaskEntry(version="1.0", convention="harness", summary=summary,
                                                   percent={"yes_no_accuracy": True}))
        run.set_status(status)

    fake_run(stages.dir.eval_dir(cells[0].id, "phantom_presence"), 0.5)
    fake_run(stages.dir.eval_dir(cells[1].id, "phantom_presence"), 0.7)
    # failed: left out and listed (as on every board)
    fake_run(stages.dir.eval_dir(cells[2].id, "phantom_presence"), 0.9, status="failed")
    fake_run(stages.dir.reference_dir("base", "phantom_presence"), 0.4)
    refs = reference_rows(sweep)
    spec = every_row(sweep, cells, stages.dir, refs, "m")
    assert [r.label for r in spec.rows] == ["base", "baseline-majority", "sft · k=all"]
    assert spec.rows[2].lineage == "m → sft · k=all · 3 seeds (0, 1, 2)" and spec.rows[2].expected == 3
    text, record = render(spec)
    assert record is not None
    cell = next(c for c in record["cells"] if c["row"] == "sft · k=all")
    assert (cell["n_runs"] == 2 and cell["value"] == pytest.approx(60.0)
            and cell["std"] == pytest.approx(14.142, 1e-3) and cell["metric"] == "yes_no_accuracy")
    # two seeds: the t interval of their mean, 60 ± t(0.975, 1) x 14.142 / sqrt(2) = 60 ± 12.706 x 10
    assert "**60.0** ± 14.1 [-67.1, 187.1] (2/3)" in text and "| phantom_presence " in text
    assert "| base " in text and "| sft · k=all " in text
    assert "| baseline-majority " not in text and "baseline-majority: no finished run yet" in text
    assert f"left out failed run {stages.dir.eval_dir(cells[2].id, 'phantom_presence')}" in text


# -- running, with a fake trainer (fault injection) ----------------------------------------------------------

SMALL = """\
name: small
model: {model}
tasks: [phantom_presence]
seeds: [0]
recipes: [sft, {{recipe: grpo, from: sft}}]
eval: {{limit: 2, batch_size: 2, backend: hf, backend_options: {{device: cpu}}}}
baselines: [majority]
"""


@pytest.fixture()
def fake_train(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The fake trainer as the train program (a subprocess); the other stages forked by the stage worker
    through tests/support/fake_stage.py (the CLI, or a kill where FAKE_STAGE_KILL says)."""
    monkeypatch.setattr(sweep_exec, "TRAIN_PROGRAM", [sys.executable, str(SUPPORT / "fake_train.py")])
    monkeypatch.setattr(sweep_exec, "ENTRY", "fake_stage:main")
    paths = (str(SUPPORT), os.environ.get("PYTHONPATH"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def calls(out: Path, cid: str) -> list[list[str]]:
    file = out / "cells" / cid / "train" / "calls.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines()] if file.is_file() else []


@pytest.mark.slow
def test_sweep_runs_skips_and_resumes(fake_train: Path, tiny_models: dict[str, Path],
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    file = write(fake_train / "s.yaml", SMALL.format(model=tiny_models["qwen2_vl"]))
    out = fake_train / "sweep"
    sft, grpo = "sft-phantom_presence-kall-s0", "grpo-from-sft-phantom_presence-kall-s0"
    argv = ["train-then-eval", "--sweep", str(file), "--output", str(out)]

    # the GRPO cell is killed once mid-training (a subprocess), the base model's evaluation at its start (a
    # forked stage): the sweep goes on, reports both, exits 1
    monkeypatch.setenv("FAKE_TRAIN_CRASH", grpo)
    monkeypatch.setenv("FAKE_TRAIN_CRASH_MARK", str(fake_train / "crashed"))
    monkeypatch.setenv("FAKE_STAGE_KILL", str(out / "reference" / "base"))
    monkeypatch.setenv("FAKE_STAGE_KILL_MARK", str(fake_train / "killed"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 cell(s) failed: reference-base, " + grpo in err and "exited with -9" in err
    assert (out / "cells" / sft / "eval" / "phantom_presence" / "run.json").is_file()
    assert (out / "cells" / grpo / "train" / "checkpoint-1").is_dir()
    assert json.loads((out / "sweep.json").read_text())["failed"].keys() == {"reference-base", grpo}
    run = json.loads((out / "cells" / sft / "eval" / "phantom_presence" / "run.json").read_text())
    assert run["command"][:2] == [str(SUPPORT / "fake_stage.py"), "run"]  # forked: the entry's argv
    assert (out / "logs" / "stage-worker.log").is_file()

    # again without --resume: the started cell is refused, nothing is clobbered
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err

    # --resume: the finished cell and reference rows are skipped, the killed one resumes from its checkpoint
    assert main([*argv, "--resume"]) == 0
    assert len(calls(out, sft)) == 1
    grpo_calls = calls(out, grpo)
    assert len(grpo_calls) == 2 and "--resume" not in grpo_calls[0] and "--resume" in grpo_calls[1]
    parent_final = str((out / "cells" / sft / "train" / "final").resolve())
    assert grpo_calls[1][grpo_calls[1].index("--model") + 1] == parent_final  # trains from the SFT cell
    board_text = (out / "leaderboard.md").read_text()
    for row in ("| base ", "| baseline-majority ", "| sft · k=all ", "| grpo-from-sft · k=all "):
        assert row in board_text
    assert "sft → grpo · k=all · 1 seed (0)" in board_text
    record = json.loads((out / "sweep.json").read_text())
    assert not record["failed"] and all(c["finished"] for c in record["cells"])
    assert record["cells"][1]["eval"]["phantom_presence"]["result"]["metric"] == "yes_no_accuracy"
    typed = SweepDir(out).log()  # the typed record reads the file the sweep wrote, field for field
    assert typed is not None and typed.model_dump(mode="json") == record
    assert typed.cells[1].train.status == "finished"

    # everything finished: a rerun only re-renders (no train call, no new run)
    stamp = (out / "cells" / grpo / "eval" / "phantom_presence" / "run.json").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert len(calls(out, grpo)) == 2
    assert (out / "cells" / grpo / "eval" / "phantom_presence" / "run.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_cells_one_at_a_time_then_merge(fake_train: Path, tiny_models: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    file = write(fake_train / "s.yaml", SMALL.format(model=tiny_models["qwen2_vl"]).replace(
        "baselines: [majority]", "baselines: []\nbase_row: false\nshots: [2]"))
    out = fake_train / "sweep"
    base = ["train-then-eval", "--sweep", str(file), "--output", str(out)]
    sft, grpo = "sft-phantom_presence-k2-s0", "grpo-from-sft-phantom_presence-k2-s0"
    assert main([*base, "--cell", grpo, "--resume"]) == 2  # its parent has not trained yet
    assert "has not finished training" in capsys.readouterr().err
    assert main([*base, "--cell", "nope"]) == 2
    assert main([*base, "--cell", sft, "--resume"]) == 0
    split = out / "splits" / "phantom_presence-k2-s0.json"
    assert json.loads(split.read_text())["phantom_presence"]  # k-shot ids from `medharness split`
    assert calls(out, sft)[0][calls(out, sft)[0].index("--samples") + 1] == str(split)
    assert not (out / "leaderboard.md").exists()  # a single cell never renders the board
    assert main([*base, "--cell", grpo, "--resume"]) == 0
    assert main([*base, "--resume"]) == 0  # the final merge: nothing left to run, the board is rendered
    assert "| grpo-from-sft · k=2/class " in (out / "leaderboard.md").read_text()


def test_demo_sweep_is_valid() -> None:
    sweep = load_sweep(DEMO)
    assert [c.id for c in expand(sweep)] == ["sft-phantom_presence-kall-s0",
                                             "grpo-from-sft-phantom_presence-kall-s0"]
    assert sweep.model == "tiny:small" and sweep.baselines == ["majority"]
    assert sweep.common_presets == ["tiny_cpu", "tiny_learn"] and sweep.eval.ablate == ["blank"]
    assert sweep.eval.limit is None  # all 200 test scans: enough that the rows' intervals separate


# -- the real train stage ------------------------------------------------------------------------------------

REAL = """\
name: real
model: {model}
tasks: [phantom_presence]
recipes: [sft, {{recipe: grpo, from: sft}}]
common_presets: [tiny_cpu]
overrides: [samples.limit=4, trl.save_steps=1]  # a checkpoint each step: the kill below leaves checkpoint-1
max_steps: 2
eval: {{limit: 4, batch_size: 4, backend: hf, backend_options: {{device: cpu}}}}
baselines: [majority]
"""


@pytest.mark.slow
def test_real_sweep_end_to_end(tmp_path: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """SFT then GRPO-from-SFT with the real `medharness train`, evaluated by `run`: the board has every row
    and lineage; a finished sweep resumed does nothing; a cell killed mid-training resumes from its last
    checkpoint."""
    pytest.importorskip("trl")
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    file = write(tmp_path / "s.yaml", REAL.format(model=tiny_models["qwen2_vl"]))
    out = tmp_path / "sweep"
    argv = ["train-then-eval", "--sweep", str(file), "--output", str(out)]
    sft, grpo = "sft-phantom_presence-kall-s0", "grpo-from-sft-phantom_presence-kall-s0"
    assert main(argv) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert all(c["finished"] for c in record["cells"]) and not record["failed"]
    sft_final, grpo_final = (out / "cells" / cid / "train" / "final" for cid in (sft, grpo))
    assert Path(record["cells"][1]["train"]["final"]) == grpo_final
    grpo_manifest = json.loads((grpo_final / "medharness.json").read_text())
    assert (grpo_manifest["recipe"] == "grpo"
            and grpo_manifest["parent"] == file_hash(sft_final / "medharness.json"))
    board_text = (out / "leaderboard.md").read_text()
    for row in ("| base ", "| baseline-majority ", "| sft · k=all ", "| grpo-from-sft · k=all "):
        assert row in board_text
    for lineage in ("qwen2_vl (no training)", "baseline:majority", "qwen2_vl → sft · k=all · 1 seed (0)",
                    "qwen2_vl → sft → grpo · k=all · 1 seed (0)"):
        assert lineage in board_text
    run = json.loads((out / "cells" / grpo / "eval" / "phantom_presence" / "run.json").read_text())
    assert (run["trained_from"]["recipe"] == "grpo"
            and run["trained_from"]["parent"] == grpo_manifest["parent"])

    # finished: --resume trains and evaluates nothing
    files = [out / "cells" / c / d for c in (sft, grpo)
             for d in ("train/train.json", "eval/phantom_presence/run.json")]
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main([*argv, "--resume"]) == 0
    assert [f.stat().st_mtime_ns for f in files] == stamps

    # the GRPO cell as a kill during step 2 leaves it: checkpoint-1 saved, no final, train.json still running
    train_dir = out / "cells" / grpo / "train"
    for folder in (train_dir / "final", train_dir / "checkpoint-2", out / "cells" / grpo / "eval"):
        shutil.rmtree(folder)
    info = json.loads((train_dir / "train.json").read_text())
    (train_dir / "train.json").write_text(json.dumps({**info, "status": "running", "final": None}))
    capsys.readouterr()
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err  # not without --resume
    assert main([*argv, "--resume"]) == 0
    info = json.loads((train_dir / "train.json").read_text())
    assert (info["status"] == "finished" and info["steps"] == 2
            and info["resumed_from"].endswith("checkpoint-1"))
    assert json.loads((train_dir / "final" / "medharness.json").read_text())["step"] == 2
    # the parent untouched
    assert (out / "cells" / sft / "train" / "train.json").stat().st_mtime_ns == stamps[0]
    assert json.loads((out / "cells" / grpo / "eval" / "phantom_presence" / "run.json")
                      .read_text())["status"] == "finished"
    assert "| grpo-from-sft · k=all " in (out / "leaderboard.md").read_text()


def test_a_single_run_cell_shows_that_run_s_own_interval() -> None:
    from medharness.leaderboards.render import cell_text
    from medharness.runs.results import Value, over_runs

    one = over_runs([Value(50.0, 40.2, 59.8, n=10, method="wilson"), Value(None)])
    assert (one.n_runs, one.low, one.high, one.method) == (1, 40.2, 59.8, "wilson")
    assert cell_text(one, 1, intervals=True) == "50.0 [40.2, 59.8]"
    assert cell_text(over_runs([Value(50.0)]), 1, intervals=True) == "50.0"  # an old run log


def test_a_second_whole_sweep_on_one_folder_is_refused(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Two sweeps on one output used to leave a sweep.json that called a finished row failed."""
    from medharness.runs.runlog import RunLock

    file = write(tmp_path / "s.yaml", "model: m\ntasks: [phantom_presence]\nrecipes: [sft]\n")
    out = tmp_path / "sweep"
    out.mkdir()
    held = RunLock.acquire(out, "train-then-eval")
    try:
        assert main(["train-then-eval", "--sweep", str(file), "--output", str(out)]) == 2
        assert "is in use by another medharness process (train-then-eval process" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
    finally:
        held.release()
