"""Honest floors: a baseline's answer reaches the scorer in the format its prompt variant asks for, on every
shipped task and variant; without a train split or card prior it is an oracle floor, labelled so in run.json
and on boards."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from medharness.backends.base import Request
from medharness.backends.baseline import BaselineBackend
from medharness.core.records import Prompt, Sample
from medharness.leaderboards.board import build
from medharness.leaderboards.render import render_markdown
from medharness.leaderboards.spec import DEFAULT
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.runlog import RunDir
from medharness.taskfiles.answers import format_answer, parser_steps
from medharness.taskfiles.task import TASKS_DIR, load_task, recipe_for

SHIPPED = sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))
VARIANTS = [(name, variant) for name in SHIPPED for variant in load_task(name).config.prompts.variants]


def gold_sample(name: str, variant: str) -> Sample:
    """A sample whose gold fits the variant's innermost parser (a class, an option, a box, a grade, a
    yes/no)."""
    steps = [step for step, _ in parser_steps(load_task(name), variant)]
    meta: dict[str, Any] = {"image_size": [640, 480], "resized_size": [448, 336], "answer_type": "CLOSED"}
    target: Any = "yes"
    choices: tuple[str, ...] = ()
    if "label" in steps:
        choices, target = ("melanocytic nevus", "pneumonia", "normal"), "pneumonia"
    elif "choice" in steps:
        choices, target = ("cyst", "tumour", "abscess"), "tumour"
    elif "json_bbox" in steps:
        target = [64.0, 48.0, 320.0, 240.0]
    elif "integer" in steps:
        target = 2
    return Sample(id="1", task=name, question="q", target=target, choices=choices, meta=meta)


@pytest.mark.parametrize("name, variant", VARIANTS, ids=[f"{n}-{v}" for n, v in VARIANTS])
def test_every_shipped_variant_reads_back_the_answer_written_in_its_format(name: str, variant: str) -> None:
    """The writer the baselines use (`medharness.taskfiles.answers.format_answer`) against the variant's own
    recipe: the gold written in the variant's format is parsed and earns full credit on the task's primary
    metric."""
    task = load_task(name)
    sample = gold_sample(name, variant)
    recipe = recipe_for(task, prompt=variant)
    text = format_answer(task, variant, sample, sample.target)
    answer = recipe.parser(text, sample)  # the primary metric only: the `*_judged` variants add judge metrics
    assert answer.parsed, f"{name}/{variant}: {text!r} -> {answer.note}"
    primary = recipe.metrics[0]
    assert primary.metric.name not in ("judge_score", "judge_rate")
    assert primary.score(answer, sample, text) == pytest.approx(1.0), (text, primary.label)


TOY = """\
name: toy
version: "1"
description: toy
card: {licence: x, citation: y}
sources: [{kind: local, path: "{split}.jsonl"}]
columns: {id: qid, meta: {answer_type: t}}
prompts:
  default: r1
  variants:
    plain: {user: "{question}"}
    r1: {user: "{question} <think> </think> <answer> </answer>", parser: [answer_tag, short_answer]}
"""


def toy_task(tmp_path: Path) -> Path:
    """A test-only task without a card prior: 3 of 4 CLOSED golds are "no", the OPEN gold is "liver"."""
    (tmp_path / "toy.yaml").write_text(TOY)
    data = tmp_path / "data"
    data.mkdir()
    golds = [("no", "CLOSED"), ("no", "CLOSED"), ("yes", "CLOSED"), ("no", "CLOSED"), ("liver", "OPEN")]
    (data / "test.jsonl").write_text("".join(json.dumps({"qid": i, "question": "q", "answer": a, "t": t})
                                             + "\n" for i, (a, t) in enumerate(golds)))
    return data


def test_without_train_split_or_prior_the_majority_is_an_oracle_floor_written_in_the_variant_format(
        tmp_path: Path) -> None:
    data = toy_task(tmp_path)
    task = load_task(tmp_path / "toy.yaml", {"data_dir": str(data)})
    samples = task.load_samples()
    backend = BaselineBackend("majority")
    backend.prepare(task, samples)
    texts = [g.text for g in backend.generate([Request(prompt=Prompt(sample_id=s.id, messages=()))
                                               for s in samples])]
    assert texts == ["<answer>no</answer>"] * 4 + ["<answer>liver</answer>"]
    source = backend.answer_source("toy")
    assert source is not None and source.kind == "oracle" and "evaluated test split" in source.detail
    assert task.load_report["split"] == "test"  # trying the train split did not overwrite the report


def test_oracle_floor_is_named_in_the_run_log_and_on_the_board(tmp_path: Path) -> None:
    data = toy_task(tmp_path)
    out = tmp_path / "run"
    Runner(RunConfig(model="baseline:majority", tasks=str(tmp_path / "toy.yaml"), data_dir=str(data)),
           out).run()
    entry = RunDir.open(out).log.tasks["toy"]
    assert entry.baseline is not None and entry.baseline.kind == "oracle"
    assert entry.summary is not None and entry.summary.metrics["vqa_accuracy"].value == pytest.approx(4 / 5)
    board = render_markdown(build(DEFAULT, [out]))
    label = RunDir.open(out).log.display_name
    assert f"| {label} (oracle floor) " in board and "oracle floor" in board.split("\n\n")[-1]
    # a resumed run with nothing left to do keeps the label
    Runner(RunConfig(model="baseline:majority", tasks=str(tmp_path / "toy.yaml"), data_dir=str(data)), out,
           resume=True).run()
    assert RunDir.open(out).log.tasks["toy"].baseline == entry.baseline


def test_a_train_split_baseline_is_not_labelled_oracle(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Runner(RunConfig(model="baseline:majority", tasks="phantom_presence", limit=10), out).run()
    entry = RunDir.open(out).log.tasks["phantom_presence"]
    assert entry.baseline is not None and entry.baseline.kind == "train"
    assert "oracle" not in render_markdown(build(DEFAULT, [out]))


@pytest.mark.parametrize("task", ["phantom_presence", "phantom_box", "phantom_side",
                                  "phantom_size", "phantom_count"])
@pytest.mark.parametrize("mode", ["majority", "random"])
def test_baselines_answer_every_phantom_variant_in_its_format(tmp_path: Path, task: str, mode: str) -> None:
    """End to end on the offline tasks, every prompt variant: no baseline answer is unparsed."""
    for variant in load_task(task).config.prompts.variants:
        out = tmp_path / f"{variant}"
        Runner(RunConfig(model=f"baseline:{mode}", tasks=task, limit=20,
                         overrides={task: {"prompt": variant}}), out).run()
        summary = RunDir.open(out).log.tasks[task].summary
        assert summary is not None and summary.n == 20 and summary.n_unparsed == 0, (variant, summary)


def test_majority_on_pneumoniamnist_default_prompt_scores_62_5(pneumonia_dir: Path, tmp_path: Path) -> None:
    """The default prompt wants \\boxed{}: the majority class of the train split, boxed, is right on 390 of
    624."""
    out = tmp_path / "run"
    Runner(RunConfig(model="baseline:majority", tasks="medmnist_pneumonia", data_dir=str(pneumonia_dir)),
           out).run()
    entry = RunDir.open(out).log.tasks["medmnist_pneumonia"]
    assert entry.prompt == "names" and entry.baseline is not None and entry.baseline.kind == "train"
    summary = entry.summary
    assert summary is not None and summary.n == 624 and summary.n_unparsed == 0
    assert summary.metrics["label_accuracy"].value == pytest.approx(390 / 624)  # 62.5


@pytest.mark.parametrize("mode", ["majority", "random"])
@pytest.mark.parametrize("task, fixture", [("vqa_rad", "vqa_rad_dir"), ("slake", "slake_dir")])
def test_baselines_run_on_the_test_only_copies_as_labelled_oracle_floors(
        task: str, fixture: str, mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    data_dir = request.getfixturevalue(fixture)
    out = tmp_path / "run"
    Runner(RunConfig(model=f"baseline:{mode}", tasks=task, data_dir=str(data_dir)), out).run()
    entry = RunDir.open(out).log.tasks[task]
    assert entry.baseline is not None and entry.baseline.kind == "oracle"
    summary = entry.summary
    assert (summary is not None and summary.n_unparsed == 0
            and summary.n == {"vqa_rad": 451, "slake": 1061}[task])
    assert f"| {RunDir.open(out).log.display_name} (oracle floor) " in render_markdown(build(DEFAULT, [out]))


def test_the_sweep_board_names_an_oracle_floor(tmp_path: Path) -> None:
    """A sweep evaluated on a test-only task: its baseline reference row is a real run of baseline:majority
    whose answers are an oracle floor, and the sweep's board says so in the cell and in the legend."""
    from medharness.trainers.sweeps.board import every_row, render
    from medharness.trainers.sweeps.schema import expand, load_sweep
    from medharness.trainers.sweeps.stages import Stages, reference_rows

    data = toy_task(tmp_path)
    file = tmp_path / "s.yaml"
    file.write_text("model: m\ntasks: [phantom_presence]\neval_tasks: [toy]\nrecipes: [sft]\nbaselines: "
                    "[majority]\n")
    sweep = load_sweep(file)
    stages = Stages(sweep, file, tmp_path / "sweep", resume=False)
    Runner(RunConfig(model="baseline:majority", tasks=str(tmp_path / "toy.yaml"), data_dir=str(data)),
           stages.dir.reference_dir("baseline-majority", "toy")).run()
    text, _ = render(every_row(sweep, expand(sweep), stages.dir, reference_rows(sweep), "m"))
    # the row is marked, as on every board, and shows the run's own interval
    assert re.search(r"\| baseline-majority \(oracle floor\) \| \S*80\.0\S* \[[0-9.]+, [0-9.]+\]", text)
    assert "whose answers come from the golds of the very split it is scored on" in text
