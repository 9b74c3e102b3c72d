"""The default board (`medharness leaderboard RUNS...`) from real runs: one row per run, labelled uniquely;
folders that are no run directory skipped with a note; failed runs left out and listed; a train-then-eval
folder stands for its runs (`leaderboard runs/*` right after `make demo`); a run log of the previous shape."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.leaderboards.board import build
from medharness.leaderboards.render import render_markdown
from medharness.leaderboards.spec import DEFAULT, load_board
from medharness.runs.runlog import RunDir

OLD = Path(__file__).parents[1] / "data" / "runlog_v0"


def run(out: Path, model: str, *extra: str, tasks: str = "phantom_presence") -> int:
    return main(["run", "--model", model, "--tasks", tasks, "--limit", "40", "--output", str(out),
                 "--no-progress", "--no-cache", *extra])


def test_leaderboard_from_run_dirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for model in ("baseline:majority", "baseline:constant:no"):
        assert run(tmp_path / model.replace(":", "_"), model) == 0
        out = capsys.readouterr().out  # the run's console summary: groups, each value with its interval
        group = RunDir.open(tmp_path / model.replace(":", "_")).log.tasks["phantom_presence"].summary.groups
        m = group["n_lesions"]["0"].metrics["yes_no_accuracy"]
        assert "phantom_presence by n_lesions:" in out
        assert f"{100 * m.value:.2f} [{100 * m.ci_low:.2f}, {100 * m.ci_high:.2f}]" in out
    board = tmp_path / "board.md"
    assert main(["leaderboard", *map(str, sorted(tmp_path.glob("baseline_*"))), "--output", str(board)]) == 0
    text = board.read_text()
    assert "| baseline_constant_no " in text and "| baseline_majority " in text  # run ids: the rows
    assert "baseline:constant:no" in text  # the model, in the lineage column
    assert "phantom_presence · yes_no_accuracy" in text and "[95% interval]" in text
    assert main(["leaderboard", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_after_make_demo_skips_non_runs_and_lists_failed_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`medharness leaderboard runs/* --output board.md` with what `make demo` leaves (a train-then-eval
    folder), a folder of notes, a stray file, a run of its own and a failed run."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: floors\nmodel: tiny:small\nrecipes: []\ntasks: [phantom_presence]\nbase_row: "
                     "false\nbaselines: [majority, 'constant:no']\neval: {limit: 20, backend: hf}\n")
    assert main(["train-then-eval", "--sweep", str(sweep), "--output", "runs/demo"]) == 0
    assert run(Path("runs/mine"), "baseline:random") == 0
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "nothing", "prediction": "x"}) + "\n")
    assert run(Path("runs/broken"), str(preds), "--max-error-rate", "0.5") == 2
    assert RunDir.open(Path("runs/broken")).log.status == "failed"
    (tmp_path / "runs" / "notes").mkdir()
    (tmp_path / "runs" / "old-board.md").write_text("| a board |\n")
    capsys.readouterr()
    assert main(["leaderboard", *sorted(map(str, Path("runs").glob("*"))), "--output", "board.md"]) == 0
    err = capsys.readouterr().err
    text = Path("board.md").read_text()
    rows = [line.split("|")[1].strip() for line in text.split("\n\n")[0].splitlines()[2:]]
    assert rows == ["baseline-constant-no/phantom_presence", "baseline-majority/phantom_presence", "mine"]
    for message in ("runs/demo: a train-then-eval folder; its 2 run directories are shown",
                    "skipped runs/notes: not a run directory", "skipped runs/old-board.md: a file",
                    "left out failed run runs/broken (task phantom_presence: "):
        assert message in err and message in text


def test_two_runs_whose_model_folders_share_a_name_stay_two_rows(tmp_path: Path) -> None:
    """Sweep-style run directories named alike, and runs given the same --label, never collapse."""
    paths = [tmp_path / "a" / "phantom_presence", tmp_path / "b" / "phantom_presence",
             tmp_path / "c", tmp_path / "d"]
    for path, model in zip(paths, ("baseline:majority", "baseline:constant:no", "baseline:random",
                                   "baseline:constant:yes"), strict=True):
        label = ("--label", "same") if path.name in ("c", "d") else ()
        assert run(path, model, *label) == 0
    board = build(DEFAULT, paths)
    assert [r.label for r in board.rows] == ["a/phantom_presence", "b/phantom_presence",
                                             "same (c)", "same (d)"]
    values = [board.cell(r.label, "phantom_presence · yes_no_accuracy").value for r in board.rows]
    expected = [100 * RunDir.open(p).log.tasks["phantom_presence"].summary.metrics["yes_no_accuracy"].value
                for p in paths]
    assert values == pytest.approx(expected)


@pytest.mark.slow
def test_checkpoint_folders_of_one_name_are_two_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Two tiny models saved as `checkpoint-500` in different folders: two rows (they were one before)."""
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    for seed, where in enumerate(("a", "b")):
        assert main(["make-tiny-model", f"{where}/checkpoint-500", "--seed", str(seed)]) == 0
        assert main(["run", "--model", f"{where}/checkpoint-500", "--tasks", "phantom_presence", "--limit",
                     "4", "--output", f"runs/{where}", "--no-progress", "--no-cache"]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "runs/a", "runs/b", "--format", "csv"]) == 0
    records = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["row"], r["lineage"]) for r in records] == [("a", "a/checkpoint-500"),
                                                           ("b", "b/checkpoint-500")]


def test_board_of_a_previous_shape_run_with_judges(tmp_path: Path) -> None:
    shutil.copytree(OLD, tmp_path / "old")
    board = build(DEFAULT, [tmp_path / "old"])
    labels = [c.label for c in board.columns]
    assert labels[:2] == ["phantom_presence · yes_no_accuracy", "phantom_count · accuracy"]
    assert {"phantom_presence · panel:rarl_v1:prediction_score:majority",
            "phantom_presence · judge:strict:prediction_score"} <= set(labels)
    cell = board.cell(board.rows[0].label, "phantom_presence · yes_no_accuracy")
    # no recorded interval: the fallback
    assert cell.n == 12 and cell.method == "normal (1.96 x standard error)"
    text = render_markdown(board)
    assert "panel:rarl_v1:prediction_score:majority" in text and "judge:NAME:FIELD" in text
    no_judges = build(DEFAULT.model_copy(update={"judges": False}), [tmp_path / "old"])
    assert not any(c.judge for c in no_judges.columns)


def test_spec_rows_from_a_sweep_and_a_training_output(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`sweep:` + `cell:` and `checkpoint:` + `step:` rows find the run directories in those folders'
    layouts."""
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text("name: floors\nmodel: tiny:small\nrecipes: []\ntasks: [phantom_presence]\n"
                              "base_row: false\nbaselines: [majority]\neval: {limit: 20, backend: hf}\n")
    assert main(["train-then-eval", "--sweep", "s.yaml", "--output", "sw"]) == 0
    # where `train --eval-every` puts a point
    assert run(Path("train/evals/step-40"), "baseline:constant:no") == 0
    Path("b.yaml").write_text("name: b\nrows:\n  - {sweep: sw, cell: reference/baseline-majority, label: "
                              "majority}\n  - {checkpoint: train, step: 40, label: step 40}\n"
                              "  - {checkpoint: train, step: 80, label: step 80}\n"
                              "reference: step 80\nsignificance: {alpha: 0.05}\n")
    board = build(load_board("b.yaml"))
    assert [r.label for r in board.rows] == ["majority", "step 40"]
    assert [str(r.runs[0].path) for r in board.rows] == ["sw/reference/baseline-majority/phantom_presence",
                                                         "train/evals/step-40"]
    assert board.notes == ["skipped train/evals/step-80: no such file or folder",
                           "row step 80: no finished run yet",
                           "reference row 'step 80' has no finished run yet: left out"]
    assert not board.marks
    Path("typo.yaml").write_text(Path("b.yaml").read_text().replace("reference: step 80",
                                                                    "reference: step 8"))
    with pytest.raises(ConfigError, match="reference row 'step 8' is not a row label"):
        build(load_board("typo.yaml"))
