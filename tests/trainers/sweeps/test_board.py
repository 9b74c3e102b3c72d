"""A sweep's boards: the paper layout (`table:`) with the published rows of the board spec `reference:`
names, rendered by `leaderboards`; per-entry tasks, prompts and eval-task mappings, and the dry run's checks
of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.core.records import MetricSummary, RunSettings, TaskEntry, TaskSummary
from medharness.runs.runlog import RunDir
from medharness.trainers.sweeps.board import paper_table, published_board, render
from medharness.trainers.sweeps.schema import (
    all_eval_tasks,
    eval_prompt,
    eval_tasks,
    expand,
    load_sweep,
    train_prompt,
)
from medharness.trainers.sweeps.stages import Stages


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


REFERENCE = """\
name: paper_t9
caption: copied by hand
average: true
columns:
  - {task: phantom_presence, label: Presence}
  - {task: phantom_side, metric: choice_accuracy, label: Side}
rows:
  - {label: base, published: {Presence: 50.0, Side: 40.0, Average: 45.0}, source: "A paper, Table 9"}
  - {label: tuned, published: {Presence: 80.0}, source: "A paper, Table 9"}
  - {label: bigger model, published: {Presence: 90.0, Side: 91.0, Average: 90.5}, source: "A paper, Table 9"}
"""

SWEEP = """\
name: t
model: tiny
tasks: [phantom_presence, phantom_side]
seeds: [0, 1]
recipes:
  - grpo
  - {recipe: grpo, id: boxes, tasks: [phantom_box], prompt: r1, eval_prompt: plain}
eval_tasks: {phantom_box: [phantom_presence, phantom_side]}
common_presets: [tiny_cpu]
reference: ref.yaml
table:
  title: Table 9
  columns:
    - {label: Presence, task: phantom_presence}
    - {label: Side, task: phantom_side, metric: choice_accuracy}
    - {label: Average, average: true}
  rows:
    - {label: base, reference: base}
    - {label: tuned, entry: grpo}
    - {label: boxes, entry: boxes}
"""


def fake_run(folder: Path, task: str, values: dict[str, float]) -> None:
    """A finished run directory whose run log holds one task summary (no model needed)."""
    run = RunDir.create(folder, RunSettings(model="m", tasks=task))
    metrics = {k: MetricSummary(value=v, n=10, n_unparsed=0) for k, v in values.items()}
    summary = TaskSummary(task=task, task_version="1.0", convention="harness", n=10, n_unparsed=0,
                          metrics=metrics)
    run.set_task(task, TaskEntry(version="1.0", convention="harness", summary=summary,
                                 percent=dict.fromkeys(values, True)))
    run.set_status("finished")


def test_entry_tasks_prompts_and_eval_mapping(tmp_path: Path) -> None:
    write(tmp_path / "ref.yaml", REFERENCE)
    sweep = load_sweep(write(tmp_path / "s.yaml", SWEEP))
    cells = expand(sweep)
    assert [c.id for c in cells] == ["grpo-phantom_presence-kall-s0", "grpo-phantom_presence-kall-s1",
                                     "grpo-phantom_side-kall-s0", "grpo-phantom_side-kall-s1",
                                     "boxes-phantom_box-kall-s0", "boxes-phantom_box-kall-s1"]
    box, presence = cells[4], cells[0]
    assert eval_tasks(sweep, box) == ["phantom_presence", "phantom_side"]
    assert eval_tasks(sweep, presence) == ["phantom_presence"]  # not in the mapping: evaluated on itself
    assert all_eval_tasks(sweep) == ["phantom_presence", "phantom_side"]
    assert (train_prompt(sweep, box), eval_prompt(sweep, box, "phantom_side")) == ("r1", "plain")
    assert (train_prompt(sweep, presence), eval_prompt(sweep, presence, "phantom_presence"),
            eval_prompt(sweep, None, "phantom_presence")) == (None,) * 3
    per_task = sweep.model_copy(update={"prompt": {"phantom_presence": "r1"}})
    assert (train_prompt(per_task, presence), train_prompt(per_task, cells[2]),
            eval_prompt(per_task, None, "phantom_presence"),
            eval_prompt(per_task, box, "phantom_presence")) == ("r1", None, "r1", "plain")
    argv = Stages(sweep, tmp_path / "s.yaml", tmp_path / "o", resume=False).eval_args(
        "/ckpt", "phantom_side", tmp_path / "e", resume=False, prompt=eval_prompt(sweep, box, "phantom_side"))
    assert argv[argv.index("-T") + 1] == "phantom_side.prompt=plain"


def test_paper_table_with_published_rows(tmp_path: Path) -> None:
    write(tmp_path / "ref.yaml", REFERENCE)
    file = write(tmp_path / "s.yaml", SWEEP)
    sweep = load_sweep(file)
    stages = Stages(sweep, file, tmp_path / "o", resume=False)
    cells = {c.id: c for c in expand(sweep)}
    fake_run(stages.dir.reference_dir("base", "phantom_presence"), "phantom_presence",
             {"yes_no_accuracy": 0.25})
    fake_run(stages.dir.reference_dir("base", "phantom_side"), "phantom_side", {"choice_accuracy": 0.5})
    for seed, value in ((0, 0.6), (1, 0.8)):
        fake_run(stages.dir.eval_dir(f"grpo-phantom_presence-kall-s{seed}", "phantom_presence"),
                 "phantom_presence", {"yes_no_accuracy": value})
    fake_run(stages.dir.eval_dir("grpo-phantom_side-kall-s0", "phantom_side"), "phantom_side",
             {"choice_accuracy": 0.3})  # seed 1 never finished
    spec = paper_table(sweep, list(cells.values()), stages.dir, published_board(sweep, stages.base_dir))
    assert spec is not None and spec.title == "Table 9" and spec.average
    assert [r.label for r in spec.rows] == ["base", "base · published", "tuned", "tuned · published", "boxes",
                                            "bigger model · published"]
    text, record = render(spec)
    assert record is not None
    cells_ = {(c["row"], c["column"]): c for c in record["cells"]}
    assert cells_[("base", "Presence")]["value"] == pytest.approx(25.0)
    assert cells_[("base", "Side")]["value"] == pytest.approx(50.0)
    assert cells_[("base", "Average")]["value"] == pytest.approx(37.5)  # the mean of the row's columns
    tuned = cells_[("tuned", "Presence")]
    assert tuned["value"] == pytest.approx(70.0) and tuned["std"] == pytest.approx(14.1421, 1e-4)
    assert cells_[("tuned", "Side")]["n_runs"] == 1
    assert cells_[("tuned", "Average")]["value"] == pytest.approx(50.0)
    assert cells_[("tuned · published", "Presence")]["value"] == 80.0
    assert cells_[("tuned · published", "Side")]["value"] is None
    assert "row boxes: no finished run yet" in text  # no run of the boxes entry finished
    published = next(line for line in text.splitlines() if line.startswith("| tuned · published"))
    assert [c.strip() for c in published.split("|")[2:5]] == ["<u>80.00</u>", "n/a", "n/a"]
    # 70 ± 12.706 x 10
    assert "70.00 ± 14.14 [-57.06, 197.06]" in text and "30.00 (1/2)" in text
    assert "Published: A paper, Table 9." in text and "copied by hand" in text


def test_reference_board_errors(tmp_path: Path) -> None:
    """`reference:` names a board spec: its errors name the file and the line; a published value for a
    column the board lacks is refused when the board is built."""
    write(tmp_path / "ref.yaml", REFERENCE.replace("source: \"A paper, Table 9\"}", "extra: 2}", 1))
    sweep = load_sweep(write(tmp_path / "s.yaml", SWEEP))
    with pytest.raises(ConfigError, match=r"ref.yaml:8: unknown key 'rows.0.extra'"):
        published_board(sweep, tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        published_board(sweep.model_copy(update={"reference": "no_such_board"}), tmp_path)
    with pytest.raises(ConfigError, match="base_row: true"):
        load_sweep(write(tmp_path / "s.yaml", "model: m\ntasks: [phantom_presence]\nrecipes: [sft]\n"
                                              "reference: true\n"))
    with pytest.raises(ConfigError, match="the average column comes last"):
        load_sweep(write(tmp_path / "s.yaml", SWEEP.replace(
            "    - {label: Presence, task: phantom_presence}\n",
            "    - {label: Average, average: true}\n    - {label: Presence, task: phantom_presence}\n", 1)))


def test_dry_run_checks_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl", reason="the dry run checks recipes against TRL")
    write(tmp_path / "ref.yaml", REFERENCE)
    good = write(tmp_path / "s.yaml", SWEEP)
    assert main(["train-then-eval", "--sweep", str(good), "--dry-run"]) == 0
    assert "reference: 3 published rows from board paper_t9 (A paper, Table 9)" in capsys.readouterr().out
    broken = SWEEP.replace("metric: choice_accuracy", "metric: no_such_metric").replace(
        "entry: grpo}", "entry: grpo, shots: 5}").replace("reference: base}", "reference: baseline-majority}")
    write(tmp_path / "ref.yaml", REFERENCE.replace("Average: 90.5}", "Average: 90.5, Extra: 1}"))
    write(tmp_path / "s.yaml",
          broken.replace("prompt: r1, eval_prompt: plain", "prompt: r1, eval_prompt: nope"))
    assert main(["train-then-eval", "--sweep", str(good), "--dry-run"]) == 2
    err = capsys.readouterr().err
    for text in ("publishes columns ['Extra'] that are not columns of the table",
                 "no reference row 'baseline-majority'",
                 "table row 'tuned': selects no cell", "reports no metric 'no_such_metric'",
                 "eval task phantom_presence (prompt nope): task phantom_presence: unknown prompt 'nope'"):
        assert text in err


def test_dry_run_reports_data_not_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A task whose data is not on this machine is a warning (the configuration is checked), not a problem."""
    file = write(tmp_path / "s.yaml", "model: m_missing_here\ntasks: [medmnist_oct]\nrecipes: [sft]\n")
    assert main(["train-then-eval", "--sweep", str(file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "data not here: task medmnist_oct reads local files" in out and "cannot start here" in out


def test_ablated_evaluations_of_each_trained_row(tmp_path: Path) -> None:
    """`eval: {ablate: [blank]}`: each trained cell's final model is also run with `--ablate blank` into its
    own folder (in --print-commands too), and the board gets a
    `· blank image` row under each trained row."""
    from medharness.trainers.sweeps.board import every_row

    file = write(tmp_path / "s.yaml", "model: tiny\ntasks: [phantom_presence]\nrecipes: [sft]\n"
                                      "eval: {limit: 4, ablate: [blank]}\n")
    sweep = load_sweep(file)
    stages = Stages(sweep, file, tmp_path / "o", resume=False)
    (cell,) = expand(sweep)
    commands = [c.argv() for c in stages.cell_commands(cell)][1:]  # after the train command
    plain, blank = (stages.dir.eval_dir(cell.id, "phantom_presence", sub) for sub in (None, "ablate-blank"))
    assert [(a[a.index("--output") + 1], "--ablate" in a) for a in commands] == [(str(plain), False),
                                                                                 (str(blank), True)]
    assert commands[1][commands[1].index("--ablate") + 1] == "blank"
    fake_run(plain, "phantom_presence", {"yes_no_accuracy": 0.9})
    fake_run(blank, "phantom_presence", {"yes_no_accuracy": 0.5})
    spec = every_row(sweep, [cell], stages.dir, {}, "m")
    assert [r.label for r in spec.rows] == ["sft · k=all", "sft · k=all · blank image"]
    assert spec.rows[1].lineage is not None and "run --ablate blank" in spec.rows[1].lineage
    _, record = render(spec)
    assert record is not None
    values = {c["row"]: c["value"] for c in record["cells"]}
    assert values == {"sft · k=all": pytest.approx(90.0), "sft · k=all · blank image": pytest.approx(50.0)}
