"""Intervals in run summaries: clustered by the task's `cluster_by`, seeded, shown by `score`, and absent
(not invented) in run logs written before them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.records import Answer, Generation, ResultRow, Sample
from medharness.runs.rescore import score_run
from medharness.runs.runlog import RunDir
from medharness.scoring.recipe import cluster_of, rescore, summarise
from medharness.taskfiles.task import load_task, recipe_for

OLD = Path(__file__).parents[1] / "data" / "runlog_v0"  # written by medharness 0.1, before intervals


def test_old_run_log_loads_without_intervals_and_rescoring_adds_them(tmp_path: Path) -> None:
    shutil.copytree(OLD, tmp_path / "old")
    raw = json.loads((tmp_path / "old" / "run.json").read_text())["tasks"]["phantom_presence"]["summary"]
    summary = RunDir.open(tmp_path / "old").log.tasks["phantom_presence"].summary
    assert summary is not None
    head = summary.metrics["yes_no_accuracy"]
    assert (head.ci_low, head.ci_high, head.n_clusters, head.ci_method) == (None, None, None, None)
    for key, group in raw["groups"]["n_lesions"].items():  # old groups: {"n": 4.0, "<metric>": value}
        read = summary.groups["n_lesions"][key]
        assert read.n == int(group["n"]) and read.n_unparsed is None
        assert read.metrics["yes_no_accuracy"].value == group["yes_no_accuracy"]
    first = {s.task: s for s in score_run(tmp_path / "old", "harness")}  # recorded under harness@1
    again = {s.task: s for s in score_run(tmp_path / "old", "harness")}
    assert first == again  # seeded: the same run gives the same intervals
    m = first["phantom_presence"].metrics["yes_no_accuracy"]
    assert m.ci_low is not None and m.ci_high is not None and m.ci_low < m.value < m.ci_high
    assert m.n_clusters == m.n and m.ci_method == "wilson"  # phantom images are one per item: independent


def rows_on_images(per_image: list[list[str]]) -> list[ResultRow]:
    """phantom_presence rows whose samples share images: per_image[k] = the predictions about image k."""
    rows = []
    for k, preds in enumerate(per_image):
        for j, pred in enumerate(preds):
            sid = f"{k}-{j}"
            sample = Sample(id=sid, task="phantom_presence", question="lesion?", target="yes",
                            images=(f"img{k}.png",), meta={"n_lesions": 1})
            rows.append(ResultRow(task="phantom_presence", task_version="1", sample=sample, prompt_hash="",
                                  generation=Generation(sample_id=sid, text=pred), answer=Answer()))
    return rows


@pytest.mark.parametrize("cluster_by", ["image", "item", "n_lesions"])
def test_cluster_by_decides_what_is_resampled(cluster_by: str) -> None:
    task = load_task("phantom_presence")
    recipe = recipe_for(task)
    # 40 images, 3 questions each, one answer per image: the clustered interval is the wider one
    rows = rescore(rows_on_images([["yes"] * 3 if k % 2 else ["no"] * 3 for k in range(40)]), recipe)
    m = summarise(rows, recipe, [], task.name, task.version, cluster_by).metrics["yes_no_accuracy"]
    assert m.value == pytest.approx(0.5)
    width = m.ci_high - m.ci_low  # type: ignore[operator]
    if cluster_by == "image":
        assert (m.n_clusters, m.ci_method) == (40, "bootstrap-percentile") and width > 0.25
    elif cluster_by == "item":
        assert (m.n_clusters, m.ci_method) == (120, "wilson") and width < 0.2
    else:  # one meta value shared by all: a single cluster cannot vary
        assert m.n_clusters == 1 and width == 0.0
    assert {cluster_of(r.sample, "image") for r in rows} == {f"image:img{k}.png" for k in range(40)}


def test_corpus_metric_gets_a_bootstrap_interval() -> None:
    task = load_task("phantom_size")  # qwk, a corpus metric
    samples = task.load_samples()[:60]
    recipe = recipe_for(task)
    rows = [ResultRow(task=task.name, task_version=task.version, sample=s, prompt_hash="",
                      generation=Generation(sample_id=s.id, text=str(s.target) if i % 3 else "0"),
                      answer=Answer())
            for i, s in enumerate(samples)]
    summary = summarise(rescore(rows, recipe), recipe, [], task.name, task.version, task.config.cluster_by)
    qwk = next(m for label, m in summary.metrics.items() if label.startswith("qwk"))
    assert qwk.ci_method == "bootstrap-percentile" and qwk.n_clusters == 60
    assert qwk.ci_low is not None and qwk.ci_high is not None and qwk.ci_low < qwk.value < qwk.ci_high


def test_score_prints_one_scale_with_intervals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(OLD, tmp_path / "old")
    assert main(["score", str(tmp_path / "old")]) == 2  # recorded under harness@1: refused unless asked
    assert "--convention harness@2" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "old"), "--convention", "harness"]) == 0
    text = capsys.readouterr().out
    assert "95% CI" in text and "by n_lesions" in text
    assert main(["score", str(tmp_path / "old"), "--json", "--convention", "harness"]) == 0
    data = json.loads(capsys.readouterr().out)
    presence = next(d for d in data if d["task"] == "phantom_presence")
    head = presence["metrics"]["yes_no_accuracy"]
    # the group rows are on the headline's scale (x100 for percent metrics) in the console table
    group = presence["groups"]["n_lesions"]["3"]
    assert f"{group['metrics']['yes_no_accuracy']['value'] * 100:.2f}" in text
    assert (f"{head['value'] * 100:.2f}" in text
            and f"[{head['ci_low'] * 100:.2f}, {head['ci_high'] * 100:.2f}]" in text)
    # one shape: a group's metric entry has exactly the headline entry's keys; counts are integers
    assert set(group["metrics"]["yes_no_accuracy"]) == set(head) >= {"value", "stderr", "ci_low", "ci_high"}
    assert isinstance(group["n"], int) and isinstance(presence["n"], int)


def test_a_cluster_by_field_no_sample_has_is_said(caplog: pytest.LogCaptureFixture) -> None:
    task = load_task("phantom_presence")
    recipe = recipe_for(task)
    rows = rescore(rows_on_images([["yes", "no"]] * 5), recipe)
    with caplog.at_level("WARNING", logger="medharness.scoring.recipe"):
        m = summarise(rows, recipe, [], task.name, task.version, "patient_id").metrics["yes_no_accuracy"]
    assert "no sample has the cluster_by field 'patient_id'" in caplog.text
    assert m.n_clusters == 10  # items
