"""`train-then-eval --executor slurm` (trainers/sweeps/slurm.py) against a fake `sbatch` on PATH that records
its arguments and the script it was given, and answers as sbatch does ("Submitted batch job N"): one job per
cell with the cell's own --print-commands command, `from:` cells after their parent's job, GPUs from the
launch settings, everything written inside SWEEP/slurm/, then a merge job after all."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from chain_sweep import SWEEP as CHAIN  # tests/support

from medharness.cli import main
from medharness.trainers.sweeps import slurm
from medharness.trainers.sweeps.stages import PROGRAM, Stages

SWEEP = CHAIN + "launch: {launcher: accelerate, num_processes: 2}\n"

FAKE_SBATCH = """\
#!{python}
import json, sys
from pathlib import Path

record = Path({record!r})
before = record.read_text().splitlines() if record.exists() else []
script = Path(sys.argv[-1])
with record.open("a") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "script": script.read_text()}}) + "\\n")
if "{fail}" and script.name == "{fail}":
    print("sbatch: error: Batch job submission failed: Invalid partition name specified", file=sys.stderr)
    sys.exit(1)
print(f"Submitted batch job {{1000 + len(before)}}")
"""


def fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str = "") -> Path:
    """Put the fake sbatch first on PATH; returns the file its calls are recorded in (one JSON line each)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch-calls.jsonl"
    bin_dir.mkdir(exist_ok=True)
    program = bin_dir / "sbatch"
    program.write_text(FAKE_SBATCH.format(python=sys.executable, record=str(record), fail=fail))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def calls(record: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def sbatch_lines(text: str) -> dict[str, str]:
    return dict(line.removeprefix("#SBATCH --").split("=", 1) for line in text.splitlines()
                if line.startswith("#SBATCH --"))


def test_one_job_per_cell_in_dependency_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP)
    record = fake_sbatch(tmp_path, monkeypatch)
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--print-commands"]) == 0
    printed = [line.removeprefix("medharness ") for line in capsys.readouterr().out.splitlines()
               if line.startswith("medharness train-then-eval")]
    before = files_under(tmp_path)
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "slurm",
                 "--slurm-option", "partition=gpu", "--slurm-option", "time=24:00:00"]) == 0
    jobs = calls(record)
    names = [Path(str(job["argv"][-1])).stem for job in jobs]  # type: ignore[index]
    assert names == ["reference-base", "reference-baseline-majority", "sft-phantom_presence-kall-s0",
                     "sft-phantom_presence-kall-s1", "grpo-from-sft-phantom_presence-kall-s0",
                     "grpo-from-sft-phantom_presence-kall-s1", "merge"]
    ids = {name: str(1000 + i) for i, name in enumerate(names)}
    argv = {name: job["argv"] for name, job in zip(names, jobs)}
    for seed in (0, 1):  # a from: cell waits for its parent's job, and is cancelled if it fails
        assert argv[f"grpo-from-sft-phantom_presence-kall-s{seed}"][:2] == [
            f"--dependency=afterok:{ids[f'sft-phantom_presence-kall-s{seed}']}", "--kill-on-invalid-dep=yes"]
    for name in names[:4]:  # the reference rows and the first stage start at once
        assert len(argv[name]) == 1
    assert argv["merge"][0] == "--dependency=afterok:" + ":".join(ids[n] for n in names[:-1])
    # each job runs the cell's --print-commands command, through this interpreter
    commands = [str(job["script"]).splitlines()[-1] for job in jobs]
    assert commands == [shlex.join([*PROGRAM, *shlex.split(line)]) for line in [
        *printed[:2], *(p for n in names[2:6] for p in printed if p.endswith(f"--cell {n} --resume")),
        printed[-1]]]
    assert printed[-1].endswith(f"--output {out} --resume")  # the merge: the local sweep's --resume
    header = {name: sbatch_lines(str(job["script"])) for name, job in zip(names, jobs)}
    assert header["sft-phantom_presence-kall-s0"]["gres"] == "gpu:2"  # launch: num_processes 2
    assert header["reference-base"]["gres"] == "gpu:1"  # an evaluation on one GPU
    assert "gres" not in header["reference-baseline-majority"] and "gres" not in header["merge"]
    for name, lines in header.items():
        assert lines["partition"] == "gpu" and lines["time"] == "24:00:00"
        assert lines["output"] == f"{out / 'slurm' / 'logs' / name}-%j.out"
        assert lines["error"] == f"{out / 'slurm' / 'logs' / name}-%j.err"
        assert lines["job-name"] == f"mh-chain-{name}"
    # written: the scripts and jobs.json, inside SWEEP/slurm/ only
    new = files_under(tmp_path) - before - {record}
    assert new == {out / "slurm" / f"{n}.sbatch" for n in names} | {out / "slurm" / "jobs.json"}
    recorded = json.loads((out / "slurm" / "jobs.json").read_text())
    assert [(j["name"], j["job_id"]) for j in recorded] == list(ids.items())
    assert recorded[4]["after"] == ["sft-phantom_presence-kall-s0"] and recorded[4]["gpus"] == 2
    assert "6 job(s) and the merge (job 1006) submitted" in capsys.readouterr().out


@pytest.mark.slow
def test_a_job_writes_the_folders_the_sweep_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's script, run as Slurm would run it (bash), writes the reference row's folder; the sweep reads
    it as finished, so a second submission leaves that job out (and so does the merge's --resume)."""
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP)
    record = fake_sbatch(tmp_path, monkeypatch)
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "slurm"]) == 0
    script = out / "slurm" / "reference-baseline-majority.sbatch"
    for path in (out / "slurm").glob("*.sbatch"):
        assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0  # valid bash
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "reference" / "baseline-majority" / "phantom_presence" / "run.json").is_file()
    record.unlink()
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "slurm"]) == 0
    names = [Path(str(j["argv"][-1])).stem for j in calls(record)]  # type: ignore[index]
    assert "reference-baseline-majority" not in names and "reference-base" in names and len(names) == 6


def test_finished_cells_are_not_submitted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the sweep's folders say is finished (stubbed here: a finished cell takes minutes of real
    training) is skipped, and a child of a finished parent starts without a dependency."""
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP)
    record = fake_sbatch(tmp_path, monkeypatch)
    done = {"sft-phantom_presence-kall-s0"}
    monkeypatch.setattr(Stages, "cell_finished", lambda self, cell: cell.id in done)
    monkeypatch.setattr(slurm, "reference_finished", lambda stages, name: name == "base")
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "slurm"]) == 0
    jobs = {Path(str(j["argv"][-1])).stem: j["argv"] for j in calls(record)}  # type: ignore[index]
    assert list(jobs) == ["reference-baseline-majority", "sft-phantom_presence-kall-s1",
                          "grpo-from-sft-phantom_presence-kall-s0", "grpo-from-sft-phantom_presence-kall-s1",
                          "merge"]
    assert len(jobs["grpo-from-sft-phantom_presence-kall-s0"]) == 1  # its parent has finished
    assert jobs["grpo-from-sft-phantom_presence-kall-s1"][0] == "--dependency=afterok:1001"


def test_a_refused_submission_names_what_was_submitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP)
    record = fake_sbatch(tmp_path, monkeypatch, fail="sft-phantom_presence-kall-s0.sbatch")
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "slurm"]) != 0
    err = capsys.readouterr().err
    assert "Invalid partition name" in err and '"reference-base": "1000"' in err
    assert len(calls(record)) == 3  # nothing after the refused job
    assert [j["name"] for j in json.loads((out / "slurm" / "jobs.json").read_text())] == [
        "reference-base", "reference-baseline-majority"]


@pytest.mark.parametrize(("options", "message"), [
    (["--executor", "slurm", "--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--slurm-option", "partition=gpu"], "needs --executor slurm"),
    (["--executor", "slurm", "--cell", "merge"], "leave out --cell"),
    (["--executor", "slurm", "--slurm-option", "job-name=x"], "sets --job-name itself"),
    (["--executor", "slurm", "--slurm-option", "partition"], "KEY=VALUE"),
    (["--executor", "slurm", "--slurm-option", "comment=a b"], "without spaces"),
])
def test_refused_executor_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str], options: list[str],
                                  message: str) -> None:
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP)
    record = fake_sbatch(tmp_path, monkeypatch)
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), *options]) == 2
    assert message in capsys.readouterr().err
    assert not record.exists() and not out.exists()


def test_a_sweep_the_dry_run_refuses_is_not_submitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl", reason="TRL's keys are checked where TRL is installed")
    file, out = tmp_path / "s.yaml", tmp_path / "out"
    file.write_text(SWEEP.replace("max_steps: 2", "max_steps: 2\noverrides: [trl.num_generation=2]"))
    record = fake_sbatch(tmp_path, monkeypatch)
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(out), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "nothing submitted" in err and "trl.num_generation" in err
    assert not record.exists() and not (out / "slurm").exists()


def test_no_sbatch_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(SWEEP)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(tmp_path / "o"), "--executor",
                 "slurm"]) == 2
    assert "`sbatch` is not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_reference_prefix_is_the_cli_s() -> None:
    from medharness.trainers.sweeps import cli

    assert slurm.REFERENCE_PREFIX == cli.REFERENCE_PREFIX


def test_gpus_follow_the_launch_and_eval_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(SWEEP.replace("num_processes: 2", "num_processes: 4").replace(
        "batch_size: 2}", "batch_size: 2, backend: vllm, backend_options: {tensor_parallel_size: 2, "
                          "data_parallel_size: 4}}"))
    record = fake_sbatch(tmp_path, monkeypatch)
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(tmp_path / "o"), "--executor",
                 "slurm"]) == 0
    header = {Path(str(j["argv"][-1])).stem: sbatch_lines(str(j["script"])) for j in calls(record)}
    assert header["sft-phantom_presence-kall-s0"]["gres"] == "gpu:8"  # the evaluation's 2 x 4 > training's 4
    assert header["reference-base"]["gres"] == "gpu:8"
    record.unlink()
    assert main(["train-then-eval", "--sweep", str(file), "--output", str(tmp_path / "p"), "--executor",
                 "slurm", "--slurm-option", "gres=none"]) == 0  # the user's GPU option replaces ours
    assert all(sbatch_lines(str(j["script"]))["gres"] == "none" for j in calls(record))
