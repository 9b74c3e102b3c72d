"""The regression gate's exit codes on constructed run pairs, and on real runs and committed summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.runs.gate import GateSummary, GateTask, MetricInfo, ScoredSample, compare, load_side

GATE_DATA = Path(__file__).parents[1] / "data" / "gate"
SUBSETS = Path(__file__).parents[2] / "tasks" / "subsets"


def side(values: list[float], *, version: str = "1", convention: str = "harness", per_image: int = 1,
         ids: list[str] | None = None, metric: str = "accuracy",
         info: MetricInfo | None = None) -> GateSummary:
    ids = ids or [f"s{i}" for i in range(len(values))]
    samples = {i: ScoredSample(cluster=f"image:{n // per_image}", scores={metric: v})
               for n, (i, v) in enumerate(zip(ids, values, strict=True))}
    task = GateTask(task_version=version, convention=convention, cluster_by="image",
                    metrics={metric: info or MetricInfo()}, samples=samples)
    return GateSummary(source="constructed", tasks={"t": task})


BASE = [1.0] * 120 + [0.0] * 80  # 60% on 200 items


def flipped(values: list[float], n_down: int, n_up: int = 0) -> list[float]:
    """`n_down` right answers turned wrong, `n_up` wrong ones turned right."""
    out = list(values)
    rights, wrongs = [i for i, v in enumerate(out) if v == 1.0], [i for i, v in enumerate(out) if v == 0.0]
    for i in rights[:n_down]:
        out[i] = 0.0
    for i in wrongs[:n_up]:
        out[i] = 1.0
    return out


def test_identical_runs_pass() -> None:
    result = compare(side(BASE), side(BASE))
    (t,) = result.tasks
    assert (result.exit_code, t.verdict) == (0, "no change")
    assert t.paired is not None and t.paired.diff == 0.0 and t.paired.p_value == 1.0


def test_a_better_candidate_passes() -> None:
    result = compare(side(BASE), side(flipped(BASE, 0, 30)))
    assert result.exit_code == 0 and result.tasks[0].verdict == "better"
    assert result.tasks[0].drop == pytest.approx(-15.0)


def test_slightly_worse_within_tolerance_passes() -> None:
    # one answer lost in 200: 0.5 points, under the 1-point tolerance (and far from significant)
    result = compare(side(BASE), side(flipped(BASE, 1)), max_drop=1.0)
    t = result.tasks[0]
    assert result.exit_code == 0 and t.verdict == "within tolerance" and t.drop == pytest.approx(0.5)


def test_a_large_drop_that_is_not_significant_passes() -> None:
    # 2 of 10 lost: 20 points, but 2 discordant pairs cannot reject chance (exact McNemar p = 0.5)
    small = [1.0] * 6 + [0.0] * 4
    result = compare(side(small), side(flipped(small, 2)), max_drop=1.0)
    t = result.tasks[0]
    assert t.paired is not None and t.paired.p_value == pytest.approx(0.5)
    assert result.exit_code == 0 and t.verdict == "within tolerance" and t.drop == pytest.approx(20.0)


def test_significantly_worse_fails() -> None:
    result = compare(side(BASE), side(flipped(BASE, 30)), max_drop=1.0)
    t = result.tasks[0]
    assert result.exit_code == 1 and t.verdict == "worse" and t.drop == pytest.approx(15.0)
    assert t.paired is not None and t.paired.test == "mcnemar-exact" and t.paired.p_value < 1e-6
    # the same loss within a tolerance of 20 points passes
    assert compare(side(BASE), side(flipped(BASE, 30)), max_drop=20.0).exit_code == 0


def test_clustered_items_weaken_the_evidence() -> None:
    # 12 lost answers, all on 3 images of 4 questions: significant as 200 independent items, not as 50 images
    base, cand = side(BASE, per_image=1), side(flipped(BASE, 12), per_image=1)
    assert compare(base, cand).exit_code == 1
    base4, cand4 = side(BASE, per_image=4), side(flipped(BASE, 12), per_image=4)
    t = compare(base4, cand4).tasks[0]
    assert t.paired is not None and t.paired.test == "mcnemar-clustered" and t.paired.n_clusters == 50
    assert t.verdict == "within tolerance"


def test_lower_is_better_metrics_fail_when_they_rise() -> None:
    info = MetricInfo(higher_is_better=False, percent=False)  # e.g. a grade's mean absolute error
    errors = [float(i % 5) for i in range(100)]
    base = side(errors, metric="mae", info=info)
    worse = side([e + 0.2 + 0.1 * (i % 3) for i, e in enumerate(errors)], metric="mae", info=info)
    t = compare(base, worse, max_drop=0.1).tasks[0]
    assert t.verdict == "worse" and t.drop == pytest.approx(0.2 + 0.1 * 99 / 100) and t.paired is not None
    assert t.paired.test == "paired-t"


@pytest.mark.parametrize(("candidate", "reason"), [
    (side(BASE, version="2"), "task versions differ: baseline 1, candidate 2"),
    (side(BASE, convention="mumc"), "conventions differ"),
    (side(BASE[:-1]), "different items: 1 scored only in the baseline"),
    (side(BASE, ids=[f"x{i}" for i in range(200)]), "different items: 200 scored only in the baseline"),
    (GateSummary(source="empty"), "in the baseline but not in the candidate"),
])
def test_incomparable_runs_exit_2_with_the_reason(candidate: GateSummary, reason: str) -> None:
    result = compare(side(BASE), candidate)
    assert result.exit_code == 2 and result.verdict == "incomparable"
    assert reason in result.tasks[0].reason


def test_unknown_metric_is_incomparable() -> None:
    result = compare(side(BASE), side(BASE), metric="bleu")
    assert result.exit_code == 2 and "no per-sample values of metric bleu" in result.tasks[0].reason


def test_cli_on_real_runs_and_a_written_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, answer in (("yes", "yes"), ("no", "no")):
        assert main(["run", "--model", f"baseline:constant:{answer}", "--tasks", "phantom_presence",
                     "--samples", str(SUBSETS / "phantom_presence-ci.json"), "--output", str(tmp_path / name),
                     "--no-progress"]) == 0
    assert main(["gate", "--write-summary", str(tmp_path / "yes"), "-o", str(tmp_path / "base.json")]) == 0
    text = (tmp_path / "base.json").read_text()
    assert "lesion" not in text.lower()  # no question or answer text, only ids, clusters and values
    capsys.readouterr()
    assert main(["gate", "--baseline", str(tmp_path / "base.json"), "--candidate",
                 str(tmp_path / "yes")]) == 0
    assert "## medharness gate: PASS" in capsys.readouterr().out
    yes_rate = load_side(tmp_path / "base.json").tasks["phantom_presence"]
    share = sum(s.scores["yes_no_accuracy"] for s in yes_rate.samples.values()) / len(yes_rate.samples)
    code = main(["gate", "--baseline", str(tmp_path / "base.json"), "--candidate",
                 str(tmp_path / "no"), "--json"])
    out = json.loads(capsys.readouterr().out)
    # 15 "yes" and 15 "no" golds: constant "no" is as good as constant "yes", so it passes; 30 discordant
    # pairs
    assert share == pytest.approx(0.5) and code == 0 and out["tasks"][0]["paired"]["n"] == 30
    assert main(["gate", "--baseline", str(tmp_path / "missing.json"), "--candidate",
                 str(tmp_path / "no")]) == 2
    assert "neither a run directory nor a gate summary file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    assert main(["gate", "--baseline", str(tmp_path / "bad.json"), "--candidate", str(tmp_path / "no")]) == 2
    assert "not a gate summary" in capsys.readouterr().err


@pytest.mark.shared_data
def test_a_constant_candidate_fails_the_committed_vqa_rad_baseline(
        tmp_path: Path, vqa_rad_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `baseline:constant:yes` on tasks/subsets/vqa_rad-ci.json
    baseline = GATE_DATA / "vqa_rad-constant-yes.json"
    for name in ("yes", "unknown"):
        assert main(["run", "--model", f"baseline:constant:{name}", "--tasks", "vqa_rad",
                     "--data-dir", str(vqa_rad_dir), "--samples", str(SUBSETS / "vqa_rad-ci.json"),
                     "--output", str(tmp_path / name), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["gate", "--baseline", str(baseline), "--candidate", str(tmp_path / "yes")]) == 0
    assert main(["gate", "--baseline", str(baseline), "--candidate", str(tmp_path / "unknown")]) == 1
    out = capsys.readouterr().out
    assert "FAIL (1 of 1 task(s) worse)" in out and "**worse**" in out


# -- a gate that must fail never passes (issue 22, new surfaces item 3) ----------------------------------

WORSE = flipped(BASE, 86)  # 43 points worse: McNemar p far below 0.001


def test_a_baseline_with_no_task_gates_nothing_and_is_no_pass(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": "medharness-gate-summary", "source": "x", "tasks": {}}))
    cand = tmp_path / "cand.json"
    cand.write_text(side(WORSE).model_dump_json())
    assert main(["gate", "--baseline", str(empty), "--candidate", str(cand)]) == 2
    assert "no task: nothing to gate" in capsys.readouterr().err
    # a candidate whose every task has no baseline: nothing compared
    other = GateSummary(source="x", tasks={"u": side(BASE).tasks["t"]})
    assert compare(other, side(WORSE)).exit_code == 2


@pytest.mark.parametrize("max_drop", [float("nan"), float("inf"), -1.0])
def test_a_tolerance_that_is_no_number_is_refused(max_drop: float) -> None:
    from medharness.core.errors import DataError

    with pytest.raises(DataError, match="finite --max-drop"):
        compare(side(BASE), side(WORSE), max_drop=max_drop)


def test_infinite_scores_are_refused_on_either_side(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(side(BASE).model_dump_json())
    bad.write_text(side(BASE).model_dump_json().replace('"accuracy":0.0', '"accuracy":Infinity', 1))
    for base, cand in ((bad, good), (good, bad)):
        assert main(["gate", "--baseline", str(base), "--candidate", str(cand)]) == 2
        assert "not a gate summary" in capsys.readouterr().err


def test_the_direction_is_the_metric_s_registration_not_the_file_s() -> None:
    """A baseline file that flips higher_is_better would turn a 43-point loss into a gain: refused."""
    honest = MetricInfo(metric="yes_no_accuracy")
    lying = MetricInfo(higher_is_better=False, metric="yes_no_accuracy")
    result = compare(side(BASE, info=lying), side(WORSE, info=lying))
    assert result.exit_code == 2 and "registered with True" in result.tasks[0].reason
    result = compare(side(BASE, info=lying), side(WORSE, info=honest))
    assert result.exit_code == 2 and "disagree on its direction" in result.tasks[0].reason
    assert compare(side(BASE, info=honest), side(WORSE, info=honest)).exit_code == 1


def test_rates_outside_zero_to_one_are_refused() -> None:
    result = compare(side(BASE), side([*WORSE[:-1], 7.0]))
    assert result.exit_code == 2 and "outside [0, 1]" in result.tasks[0].reason


def test_a_crash_is_exit_2_never_the_worse_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from medharness.runs import gate

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(gate, "compare", broken)  # fault injection: any failure inside the comparison
    base = tmp_path / "b.json"
    base.write_text(side(BASE).model_dump_json())
    assert main(["gate", "--baseline", str(base), "--candidate", str(base)]) == 2
    assert "could not be compared (ZeroDivisionError: boom)" in capsys.readouterr().err
