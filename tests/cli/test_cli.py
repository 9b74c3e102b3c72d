"""The command line: score (predictions files and run dirs), ls, validate, help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medharness.cli import COMMANDS, build_parser, main


def write_preds(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def vqa_gold(vqa_rad_dir: Path) -> list[dict[str, object]]:
    return json.loads((vqa_rad_dir / "testset.json").read_text())


def score_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["score", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("convention", [None, "mumc", "lmms_eval", "yesno_strict",
                                        "llava_med", "set_token_f1"])
def test_gold_as_predictions_scores_perfectly_under_each_convention(
        tmp_path: Path, vqa_rad_dir: Path, vqa_gold: list[dict], convention: str | None,
        capsys: pytest.CaptureFixture[str]) -> None:
    preds = write_preds(tmp_path / "p.jsonl", [{"qid": r["qid"], "answer": r["answer"]} for r in vqa_gold])
    args = ["--task", "vqa_rad", "--data-dir", str(vqa_rad_dir), "--predictions", str(preds)]
    out = score_json(capsys, *args, *(["--convention", convention] if convention else []))
    expected = {None: "harness@2", "harness": "harness@2"}.get(convention, convention)  # the version recorded
    assert out["task"] == "vqa_rad" and out["convention"] == expected
    first = next(iter(out["metrics"].values()))
    assert first["n_unparsed"] == 0
    if convention == "llava_med":  # its closed rule needs "yes" or "no" inside the prediction
        closed = [str(r["answer"]).lower() for r in vqa_gold if r["answer_type"] == "CLOSED"]
        assert first["value"] == pytest.approx(sum("yes" in g or "no" in g for g in closed) / 272)
    elif convention != "yesno_strict":  # yesno_strict marks the 21 non-yes/no CLOSED golds wrong by design
        assert first["value"] == pytest.approx(1.0)
    assert out["groups"]["answer_type"]["CLOSED"]["n"] == 272


def test_yesno_strict_loses_exactly_the_non_yes_no_closed_golds(
        tmp_path: Path, vqa_rad_dir: Path, vqa_gold: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    preds = write_preds(tmp_path / "p.jsonl", [{"qid": r["qid"], "answer": r["answer"]} for r in vqa_gold])
    out = score_json(capsys, "--task", "vqa_rad", "--data-dir", str(vqa_rad_dir), "--predictions", str(preds),
                     "--convention", "yesno_strict")
    closed = out["groups"]["answer_type"]["CLOSED"]
    value = next(iter(closed["metrics"].values()))
    assert value["value"] == pytest.approx(251 / 272) and value["n"] == 272 and isinstance(closed["n"], int)
    assert (value["ci_low"] < value["value"] < value["ci_high"]
            and value["ci_method"] == "bootstrap-percentile")


def test_csv_and_json_list_predictions_with_named_fields(
        tmp_path: Path, vqa_rad_dir: Path, vqa_gold: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("question_key,model_output\n" + "".join(f"{r['qid']},no\n" for r in vqa_gold))
    out = score_json(capsys, "--task", "vqa_rad", "--data-dir", str(vqa_rad_dir), "--predictions",
                     str(csv_path), "--id-field", "question_key", "--prediction-field", "model_output")
    assert out["metrics"]["vqa_accuracy"]["value"] == pytest.approx(133 / 451)
    json_path = tmp_path / "p.json"
    json_path.write_text(json.dumps([{"id": r["qid"], "prediction": "no"} for r in vqa_gold]))
    assert score_json(capsys, "--task", "vqa_rad", "--data-dir", str(vqa_rad_dir),
                      "--predictions", str(json_path))["metrics"] == out["metrics"]


@pytest.mark.parametrize("rows, message", [
    ([{"qid": "nope", "answer": "yes"}], "none of its 1 ids match task vqa_rad"),
    ([{"qid": 11, "answer": "yes"}, {"qid": 11, "answer": "no"}], "duplicate prediction id '11'"),
    ([{"key": 11, "answer": "yes"}], "cannot tell which field holds the id"),
])
def test_bad_predictions_files(tmp_path: Path, vqa_rad_dir: Path, capsys: pytest.CaptureFixture[str],
                               rows: list[dict], message: str) -> None:
    preds = write_preds(tmp_path / "p.jsonl", rows)
    assert main(["score", "--task", "vqa_rad", "--data-dir", str(vqa_rad_dir),
                 "--predictions", str(preds)]) == 2
    assert message in capsys.readouterr().err


def test_partial_match_reported_and_odd_outputs_counted(
        tmp_path: Path, vqa_rad_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"qid": 11, "answer": ""}, {"qid": 13, "answer": "x" * 1_000_000},
            {"qid": 99999, "answer": "yes"}]
    preds = write_preds(tmp_path / "p.jsonl", rows)
    args = ["score", "--task", "vqa_rad", "--data-dir", str(vqa_rad_dir), "--predictions",
            str(preds), "--json"]
    assert main(args) == 2  # 2 of 451: not the task's score unless asked for
    assert "matches only 2 of the 451 samples of task vqa_rad" in capsys.readouterr().err
    assert main([*args, "--allow-partial"]) == 0
    captured = capsys.readouterr()
    assert "matched 2 of 451 task samples; 1 predictions match no sample" in captured.err
    out = json.loads(captured.out)
    acc = out["metrics"]["vqa_accuracy"]
    assert (acc["value"], acc["n"], acc["n_unparsed"], acc["ci_method"]) == (0.0, 2, 1, "wilson")
    assert acc["ci_low"] == 0.0 < acc["ci_high"]
    assert out["n"] == 2 and out["n_expected"] == 451 and acc["n_errors"] == 0


def test_rescore_run_dir_under_conventions(tmp_path: Path, vqa_rad_dir: Path, vqa_gold: list[dict],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    preds = write_preds(tmp_path / "p.jsonl",
                        [{"id": r["qid"], "prediction": f"{r['answer']}."} for r in vqa_gold])
    out_dir = tmp_path / "run"
    assert main(["run", "--model", str(preds), "--tasks", "vqa_rad", "--data-dir", str(vqa_rad_dir),
                 "--output", str(out_dir), "--no-progress"]) == 0
    capsys.readouterr()
    harness = score_json(capsys, str(out_dir))
    assert harness["metrics"]["vqa_accuracy"]["value"] == pytest.approx(1.0)  # short_answer drops the period
    mumc = score_json(capsys, str(out_dir), "--convention", "mumc")
    assert (mumc["convention"] == "mumc"
            and next(iter(mumc["metrics"].values()))["value"] == pytest.approx(1.0))
    assert main(["score", str(out_dir), "--convention", "mumcc"]) == 2
    assert "Did you mean 'mumc'?" in capsys.readouterr().err


def test_score_as_the_program_prints_what_main_returns(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`medharness score` as a process ends without the interpreter's teardown: its output is whole and its
    exit code the command's, as a caller's main([...]) gets them; a reader that goes away is no error."""
    out_dir = tmp_path / "run"
    assert main(["run", "--model", "baseline:random", "--tasks", "phantom_presence", "--limit", "30",
                 "--output", str(out_dir), "--no-progress"]) == 0
    capsys.readouterr()
    expected = score_json(capsys, str(out_dir))
    score = [sys.executable, "-m", "medharness.cli", "score"]
    done = subprocess.run([*score, str(out_dir), "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and json.loads(done.stdout) == expected, done.stderr
    failed = subprocess.run([*score, str(tmp_path / "none")], capture_output=True, text=True, check=False)
    assert failed.returncode == 2 and "is not a run directory" in failed.stderr and not failed.stdout
    proc = subprocess.Popen([*score, str(out_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes its table
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


# `medharness run` as the program, with an exit handler and (on request) a thread that is no daemon, both of
# which write a file beside the run folder when they end
RUN_AS_PROGRAM = """
import atexit, sys, threading, time
from pathlib import Path
from medharness.cli import main
out = Path(sys.argv[1])
atexit.register(lambda: Path(f"{out}.atexit").write_text("ran"))
if sys.argv[2] == "thread":
    threading.Thread(target=lambda: (time.sleep(1), Path(f"{out}.thread").write_text("ran"))).start()
sys.argv = ["medharness", "run", "--model", "baseline:random", "--tasks", "phantom_presence", "--limit", "20",
            "--output", str(out), "--no-progress"]
sys.exit(main())
"""


@pytest.mark.parametrize("thread", ["none", "thread"])
def test_run_as_the_program_ends_after_its_exit_handlers_and_threads(tmp_path: Path, thread: str) -> None:
    """`run` ends without the interpreter's teardown: its exit handlers still run, a running thread that is
    no daemon is still waited for, and the run folder, output and exit code are whole."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", RUN_AS_PROGRAM, str(out), thread], capture_output=True,
                          text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "phantom_presence" in done.stdout and "yes_no_accuracy" in done.stdout
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert Path(f"{out}.atexit").read_text() == "ran"
    assert Path(f"{out}.thread").exists() == (thread == "thread")


def test_ls_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "| vqa_rad" in out and "CC0-1.0" in out and "|    451 |" in out
    for what, expected in [("parsers", "json_bbox"), ("metrics", "qwk"), ("backends", "baseline"),
                           ("conventions", "llava_med"), ("normalizers", "vqa_v2"), ("judges", "rarl_v1"),
                           ("recipes", "| vrft_aug "), ("presets", "| tiny_cpu "), ("sweeps", "| demo "),
                           ("boards", "| vrft_table1 ")]:
        assert main(["ls", what]) == 0
        assert expected in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: '1'\ndescripton: x\n")
    assert main(["validate", str(bad)]) == 1
    assert "unknown key 'descripton'" in capsys.readouterr().out


def test_ls_lists_every_registry_and_catalogue_from_the_source() -> None:
    """`ls`'s choices are its listers; each shipped file and registered name is listed."""
    from medharness.leaderboards.spec import BOARDS
    from medharness.listings import LISTERS
    from medharness.trainers.config import PRESETS_DIR
    from medharness.trainers.recipes.base import TRAINERS
    from medharness.trainers.sweeps import DEMO

    ls = next(a for a in build_parser()._subparsers._group_actions[0].choices["ls"]._actions  # type: ignore[union-attr]
              if a.dest == "what")
    assert list(ls.choices or []) == list(LISTERS)
    listed = {what: [row[0] for row in LISTERS[what]()[1]]
              for what in ("recipes", "presets", "sweeps", "boards")}
    assert listed["recipes"] == TRAINERS.names()
    assert listed["presets"] == sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    assert listed["sweeps"] == sorted(p.stem for p in DEMO.parent.glob("*.yaml"))
    assert sorted(listed["boards"]) == sorted(p.stem for p in BOARDS.glob("*.yaml"))


def test_every_command_comes_with_its_handler() -> None:
    """One way to add a command: a module's `add_commands(sub)` adds its parsers and returns handlers."""
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) == set(COMMANDS) and all(callable(h) for h in COMMANDS.values())
    assert {"run", "train", "train-then-eval", "merge", "leaderboard", "import", "ls"} <= set(COMMANDS)


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    """Not even pydantic: the flags' help comes from the schemas' source (core/schemadocs.field_help)."""
    code = ("import sys, medharness.cli as c\n"
            "try: c.main(['--help'])\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pandas', 'trl', 'pydantic')\n"
            "         if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for command in ("run", "score", "ls", "validate", "leaderboard", "make-tiny-model"):
        assert subprocess.run([sys.executable, "-m", "medharness.cli", command, "--help"],
                              capture_output=True, text=True, check=False).returncode == 0


def test_flag_help_is_the_field_description() -> None:
    """A flag that sets a schema field shows the field's description as its help."""
    from medharness.leaderboards.spec import BoardSpec
    from medharness.runs.pipeline import RunConfig
    from medharness.trainers.evals import EvalRequest
    from medharness.trainers.schema import SamplesSpec, TrainConfig
    from medharness.trainers.sweeps.schema import LaunchSection, SweepConfig

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]

    def help_of(command: str, flag: str) -> str:
        action = next(a for a in commands[command]._actions if flag in a.option_strings)
        return str(action.help).replace("%%", "%")

    for command, flag, model, name in (
            ("run", "--limit", RunConfig, "limit"), ("run", "--max-error-rate", RunConfig, "max_error_rate"),
            ("run", "--samples", RunConfig, "samples_file"), ("run", "--no-cache", RunConfig, "cache"),
            ("run", "--tasks", RunConfig, "tasks"), ("train", "--seed", TrainConfig, "seed"),
            ("train", "--samples", SamplesSpec, "file"), ("train", "--eval-every", EvalRequest, "every"),
            ("train", "--eval-limit", EvalRequest, "limit"), ("train", "--fsdp", LaunchSection, "fsdp"),
            ("leaderboard", "--no-intervals", BoardSpec, "intervals"),
            ("train-then-eval", "--data-dir", SweepConfig, "data_dir")):
        description = model.model_fields[name].description
        assert description and help_of(command, flag).startswith(description), (command, flag)
    assert help_of("run", "--max-error-rate").endswith("(default %(default)s)")
    assert help_of("train", "--seed").endswith("(default 0)")  # the schema's default


def test_a_reader_that_goes_away_is_no_error() -> None:
    """`medharness ls metrics | head -1`: the closed pipe ends the command quietly, exit 0, no traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "medharness.cli", "ls", "metrics"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes its first line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
