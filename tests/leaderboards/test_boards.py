"""Board specs from real baseline runs: the golden Markdown, CSV and JSON shapes, the numbers against the run
logs and rows, seeds, groups, deltas and significance marks against the statistics computed here from the
rows, and strict spec errors."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from pathlib import Path

import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.leaderboards.board import build
from medharness.leaderboards.render import render_csv, render_json, render_markdown
from medharness.leaderboards.spec import BOARDS, load_board
from medharness.leaderboards.table import Board
from medharness.runs.runlog import RunDir

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture()
def in_runs(phantom_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(phantom_runs)
    return phantom_runs


def golden_board() -> Board:
    return build(load_board(GOLDEN / "phantom.yaml"))


def test_golden_markdown(in_runs: Path) -> None:
    """The board renders exactly as committed. After a deliberate change of the layout (or of how intervals
    are made), regenerate with MEDHARNESS_UPDATE_GOLDEN=1 and read the diff."""
    text = render_markdown(golden_board())
    file = GOLDEN / "phantom.md"
    if os.environ.get("MEDHARNESS_UPDATE_GOLDEN"):
        file.write_text(text, encoding="utf-8")
    assert text == file.read_text(encoding="utf-8")


def test_cells_are_the_run_logs_numbers(in_runs: Path) -> None:
    board = golden_board()
    majority = RunDir.open(in_runs / "runs" / "majority").log
    m = majority.tasks["phantom_presence"].summary.metrics["yes_no_accuracy"]
    cell = board.cell("majority", "presence")
    assert cell.value == pytest.approx(100 * m.value) and cell.n == m.n == 60
    assert cell.low is not None and cell.high is not None and cell.low <= cell.value <= cell.high
    assert ((cell.low, cell.high) == pytest.approx((100 * m.ci_low, 100 * m.ci_high))
            and cell.method == m.ci_method)
    # a group column: the summary's group value and interval
    group = majority.tasks["phantom_count"].summary.groups["n_lesions"]["3"]
    g = board.cell("majority", "phantom_count · 3")
    gm = group.metrics["accuracy"]
    assert g.value == pytest.approx(100 * gm.value) and g.n == group.n == gm.n
    assert (g.low, g.high) == pytest.approx((100 * gm.ci_low, 100 * gm.ci_high)) and g.method == gm.ci_method
    # several seeds: mean and sample std of the three runs' values, with the t interval over seeds
    values = [100 * RunDir.open(in_runs / "runs" / f"random_s{s}").log.tasks["phantom_presence"].summary
              .metrics["yes_no_accuracy"].value for s in range(3)]
    seeds = board.cell("random · 3 seeds", "presence")
    assert seeds.value == pytest.approx(statistics.fmean(values))
    assert seeds.std == pytest.approx(statistics.stdev(values)) and seeds.n_runs == 3
    assert seeds.method == "t-seeds" and seeds.low < seeds.value < seeds.high
    # the average of a row's columns
    row = [board.cell("majority", c).value for c in ("presence", "count", "phantom_count · 0",
                                                     "phantom_count · 3")]
    assert board.cell("majority", "Average").value == pytest.approx(sum(row) / 4)


def test_marks_and_deltas_are_paired_tests_on_the_rows(in_runs: Path) -> None:
    board = golden_board()
    rows = {name: {r.sample.id: r.scores["yes_no_accuracy"] for r in RunDir.open(in_runs / "runs" / name)
                   .rows("phantom_presence")} for name in ("majority", "constant_no", "random_s0")}
    raw = {}
    for name, label in (("constant_no", "constant: no"), ("random_s0", "random · seed 0")):
        a, b = rows["majority"], rows[name]
        table = [[sum(a[i] == 1 and b[i] == 1 for i in a), sum(a[i] == 1 and b[i] == 0 for i in a)],
                 [sum(a[i] == 0 and b[i] == 1 for i in a), sum(a[i] == 0 and b[i] == 0 for i in a)]]
        raw[label] = mcnemar(table, exact=True).pvalue  # the phantom samples have one image each: independent
        mark = board.marks[(label, "presence")]
        assert mark.test == "mcnemar-exact" and mark.p_value == pytest.approx(raw[label])
        assert mark.diff == pytest.approx(100 * (sum(b.values()) - sum(a.values())) / len(a))
    holm = multipletests(list(raw.values()), method="holm")[1]
    for (label, _), adjusted in zip(raw.items(), holm, strict=True):
        mark = board.marks[(label, "presence")]
        assert mark.p_adjusted == pytest.approx(adjusted) and mark.significant == (adjusted < 0.05)
    assert ("random · 3 seeds", "presence") not in board.marks  # several runs: no paired test
    delta = board.cell("Δ random · seed 0 − majority", "presence")
    assert delta.value == pytest.approx(board.marks[("random · seed 0", "presence")].diff)
    assert delta.low <= delta.value <= delta.high and delta.method.startswith("paired")
    labels = [r.label for r in board.rows]
    assert labels.index("Δ random · seed 0 − majority") == labels.index("random · seed 0") + 1


def test_csv_and_json_shapes(in_runs: Path) -> None:
    board = golden_board()
    records = list(csv.DictReader(io.StringIO(render_csv(board))))
    assert len(records) == len(board.rows) * len(board.columns) == 5 * 5
    assert {"row", "column", "task", "metric", "group", "value", "ci_low", "ci_high", "ci_method", "n",
            "vs_reference_p_holm", "significant", "runs"} <= set(records[0])
    presence = next(r for r in records if r["row"] == "majority" and r["column"] == "presence")
    assert float(presence["value"]) == pytest.approx(board.cell("majority", "presence").value)
    assert presence["metric"] == "yes_no_accuracy" and presence["runs"].endswith("runs/majority")
    data = json.loads(render_json(board))
    assert data["board"] == "phantom_golden" and data["reference"] == "majority"
    assert (data["rows"] == [r.label for r in board.rows]
            and data["columns"] == [c.label for c in board.columns])
    assert len(data["cells"]) == 25 and all(c["value"] is None or math.isfinite(c["value"])
                                            for c in data["cells"])


def test_cli_board_by_group_and_formats(in_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", "runs/majority", "runs/constant_no", "--by", "n_lesions", "--format", "json",
                 "--no-judges"]) == 0
    data = json.loads(capsys.readouterr().out)
    groups = RunDir.open(in_runs / "runs" / "majority").log.tasks["phantom_count"].summary.groups["n_lesions"]
    assert [c for c in data["columns"] if c.startswith("phantom_count")] == [
        f"phantom_count · {g}" for g in sorted(groups)]
    # the spec's row `majority` and the RUNS row share a label
    assert main(["leaderboard", "runs/majority", "--board", str(GOLDEN / "phantom.yaml"), "--format", "csv",
                 "--output", "out/board.csv"]) == 2
    assert "two rows" in capsys.readouterr().err


BAD = {
    "color: red\n": "unknown key 'color'",
    "rows:\n  - {run: a, runs: [b]}\n": "exactly one of run, runs",
    "rows:\n  - {published: {x: 1}}\n": "a published row needs a label",
    "significance: {alpha: 0.05}\n": "set `reference`",
    "columns:\n  - {task: t, colour: 1}\n": "unknown key 'columns.0.colour'",
    "rows:\n  - {sweep: s}\n": "names its cell",
}


@pytest.mark.parametrize("body", list(BAD))
def test_spec_errors_name_file_and_line(tmp_path: Path, body: str) -> None:
    file = tmp_path / "b.yaml"
    file.write_text("name: b\n" + body)
    with pytest.raises(ConfigError, match=BAD[body]) as info:
        load_board(file)
    assert f"{file}:2" in str(info.value) or f"{file}:3" in str(info.value)


def test_shipped_boards_load_and_paper_boards_render(tmp_path: Path) -> None:
    names = sorted(p.stem for p in BOARDS.glob("*.yaml"))
    assert {"vqa_rad", "slake", "medmnist", "vrft_table1", "grpo_pmc_vqa", "rarl_table2"} <= set(names)
    for name in names:
        assert load_board(name).name == name
    board = build(load_board("vrft_table1"))
    text = render_markdown(board)
    # published rows as printed, the paper's delta rows, best in bold
    line = next(x for x in text.splitlines() if x.startswith("| V-RFT + PA_P · k=256 "))
    assert [c.strip() for c in line.split("|")[2:4]] == ["**73.07**", "**82.69**"]
    assert board.cell("Δ PA_P · k=10", "Average").value == pytest.approx(42.05 - 35.16)


def test_published_numbers_must_name_a_column(tmp_path: Path) -> None:
    file = tmp_path / "b.yaml"
    file.write_text("name: b\ncolumns: [{task: vqa_rad, label: VQA-RAD}]\n"
                    "rows: [{label: paper, published: {VQA-RAD: 50.0, SLAKE: 60.0}}]\n")
    with pytest.raises(ConfigError, match=r"published row 'paper' names no column \['SLAKE'\]"):
        build(load_board(file))


def test_an_average_of_chosen_columns_under_its_own_label(tmp_path: Path) -> None:
    """RARL Table 2's "RL w/ LoRA" Totals are the plain mean of its four task columns, its SFT Totals accuracy
    over all questions: the board shows both, each published Total in the column computed its way."""
    board = build(load_board(BOARDS / "rarl_table2.yaml"))
    labels = [c.label for c in board.columns]
    assert labels[-2:] == ["Total", "Mean of 4"]
    rl = "RL w/ LoRA · 500"
    assert board.cell(rl, "Mean of 4").value == pytest.approx(48.04)  # as printed
    assert math.isnan(board.cell(rl, "Total").value or math.nan)  # not given as a micro accuracy
    assert board.cell("SFT · 500", "Total").value == pytest.approx(47.19)
    assert board.cell("SFT · 500", "Mean of 4").value == pytest.approx((59.26 + 52.61 + 34.34 + 38.33) / 4)
    file = tmp_path / "b.yaml"
    file.write_text("name: b\ncolumns: [{task: vqa_rad, label: A}, {task: slake, label: B}]\n"
                    "average: true\naverage_label: Mean\naverage_of: [A, C]\n"
                    "rows: [{label: paper, published: {A: 50.0, B: 60.0}}]\n")
    with pytest.raises(ConfigError, match=r"'Mean' column averages columns the board does not have: \['C'\]"):
        build(load_board(file))


def _summary_run(folder: Path, task: str, values: dict[str, float]) -> None:
    """A finished run directory whose run log holds one task summary (no model needed)."""
    from medharness.core.records import MetricSummary, RunSettings, TaskEntry, TaskSummary

    run = RunDir.create(folder, RunSettings(model="m", tasks=task))
    metrics = {k: MetricSummary(value=v, n=10, n_unparsed=0) for k, v in values.items()}
    summary = TaskSummary(task=task, task_version="1.0", convention="harness", n=10, n_unparsed=0,
                          metrics=metrics)
    run.set_task(task, TaskEntry(version="1.0", convention="harness", percent=dict.fromkeys(values, True),
                                 summary=summary))
    run.set_status("finished")


def test_tasks_as_rows_blank_columns_and_missing_seeds(tmp_path: Path) -> None:
    """A paper layout with tasks as rows (RARL's Table 3): columns that name no task read each row's `task`;
    `blank` leaves a column of a row empty; `expected` shows `(i/n)` when only i of n seeds finished; a
    published row sits beside the measured ones."""
    from medharness.leaderboards.spec import BoardSpec

    for task, seed, judge, rule in (("vqa_rad", 0, 0.4, 0.5), ("vqa_rad", 1, 0.6, 0.7),
                                    ("slake", 0, 0.2, 0.3)):
        _summary_run(tmp_path / f"{task}-s{seed}", task, {"vqa_accuracy": rule, "judge_final": judge})
    spec = BoardSpec.model_validate({
        "name": "t", "decimals": 1,
        "columns": [{"label": "judge final", "metric": "judge_final"}, {"label": "rule-based"}],
        "rows": [{"label": "RL · VQA-RAD", "task": "vqa_rad", "expected": 3,
                  "runs": [str(tmp_path / "vqa_rad-s*"), str(tmp_path / "slake-s0")]},
                 {"label": "RL · SLAKE", "task": "slake", "blank": ["judge final"],
                  "runs": [str(tmp_path / "slake-s0")]},
                 {"label": "RL · SLAKE (paper)", "published": {"judge final": 25.0},
                  "source": "P, Table 3"}]})
    board = build(spec)
    assert board.cell("RL · VQA-RAD", "judge final").value == pytest.approx(50.0)  # seeds 0 and 1 only
    assert board.cell("RL · VQA-RAD", "rule-based").value == pytest.approx(60.0)  # the primary metric
    assert board.cell("RL · SLAKE", "judge final").missing  # blank
    assert board.cell("RL · SLAKE", "rule-based").value == pytest.approx(30.0)
    text = render_markdown(board)
    assert "(2/3)" in text and "only i of the row's n runs (seeds) finished" in text
    assert "Published: P, Table 3." in text
    record = json.loads(render_json(board))
    assert {c["task"] for c in record["cells"] if c["row"] == "RL · SLAKE"} == {"slake"}
    with pytest.raises(ValueError, match="names no task .* needs a label"):
        BoardSpec.model_validate({"name": "t", "columns": [{"metric": "judge_final"}]})


def test_shipped_paper_boards_hold_the_published_numbers_once() -> None:
    """Each paper table's numbers live in one board spec (the sweeps read them from there): RARL's Tables 3
    and 6 in the paper's layout (tasks as rows), VRFT-Aug's Figure 3, the GRPO study's five columns."""
    rarl = load_board("rarl_table3")
    assert [c.task for c in rarl.columns] == [None] * 5
    sft_rad = next(r for r in rarl.rows if r.label == "SFT · VQA-RAD")
    assert sft_rad.task == "vqa_rad"
    assert sft_rad.published == {"GPT-4o mini final": 26.16, "Gemini final": 22.37}
    assert load_board("rarl_table6").rows[0].published["GPT-4o mini reasoning"] == 70.27
    assert next(r for r in load_board("vrft_figure3").rows if r.label == "V-RFT + PA_pi").published == {
        "HAM10000": 55.92}
    grpo = next(r for r in load_board("grpo_pmc_vqa").rows if r.label == "Dr.GRPO")
    assert grpo.published == {"accuracy": 61.09, "similarity": 0.24, "perplexity": 11.1,
                              "thinking reward": 4.17, "thinking tokens": 76.11}


def test_names_from_outside_cannot_break_the_table_or_the_terminal(tmp_path: Path) -> None:
    """A peer's model name or a run label with an ANSI escape, a pipe or a newline: one plain table cell."""
    from medharness.leaderboards.spec import BoardSpec

    _summary_run(tmp_path / "r", "vqa_rad", {"vqa_accuracy": 0.5})
    spec = BoardSpec.model_validate({"name": "t", "rows": [
        {"label": "evil | \x1b[31mred\x1b[0m\nrow", "runs": [str(tmp_path / "r")], "lineage": "a|b"}]})
    text = render_markdown(build(spec))
    assert "\x1b" not in text
    row = next(line for line in text.splitlines() if "evil" in line)
    assert row.startswith("| evil \\| \\[31mred\\[0m row ") and "a\\|b" in row  # `[` is Markdown too
