"""`medharness report`: a replayed run with unparsed and failed samples, a judged run, and an ablation pair;
the page's numbers are the run log's, and nothing is written outside the output folder."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.runs.runlog import RunDir

OLD = Path(__file__).parents[1] / "data" / "runlog_v0"
TRICKY = "I think\n```\nmaybe\n```\nso: perhaps"


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_report_of_a_run_with_unparsed_and_failed_samples(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    preds = tmp_path / "preds.jsonl"
    lines = [{"id": f"presence-{i:05d}", "prediction": "yes" if i % 3 else TRICKY} for i in range(18)]
    # ids 18, 19: no prediction, a failed sample
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    run_dir = tmp_path / "run"
    assert main(["run", "--model", str(preds), "--tasks", "phantom_presence", "--limit", "20", "--output",
                 str(run_dir), "--no-progress", "--no-cache", "--max-error-rate", "1"]) == 0
    before = files(run_dir)
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--output", str(out)]) == 0
    text = (out / "report.md").read_text()
    plotted = importlib.util.find_spec("matplotlib") is not None  # the `plots` extra
    pngs = ["headline.png", "phantom_presence-by-n_lesions.png"] if plotted else []
    assert files(run_dir) == before and sorted(files(out)) == sorted([*pngs, "report.md"])
    assert all((f"({png})" in text) == plotted
               for png in ("headline.png", "phantom_presence-by-n_lesions.png"))
    summary = RunDir.open(run_dir).log.tasks["phantom_presence"].summary
    m = summary.metrics["yes_no_accuracy"]
    assert (f"{100 * m.value:.1f} [{100 * m.ci_low:.1f}, {100 * m.ci_high:.1f}]" in text
            and m.ci_method in text)
    assert summary.n_errors == 2 and summary.n_unparsed == 8
    assert "### phantom_presence: 2 failed, 6 unparsed" in text
    assert "no prediction for id 'presence-00019'" in text
    assert "````text\n" + TRICKY + "\n````" in text  # the raw text, in a fence longer than the one inside it
    g = summary.groups["n_lesions"]["0"]
    gm = g.metrics["yes_no_accuracy"]
    section = text.split("### phantom_presence by n_lesions")[1]
    row = next(line for line in section.splitlines() if line.startswith("| 0 "))
    assert [c.strip() for c in row.split("|")[1:5]] == [
        "0", str(g.n), str(g.n_unparsed),
        f"{100 * gm.value:.1f} [{100 * gm.ci_low:.1f}, {100 * gm.ci_high:.1f}]"]
    assert main(["report", str(tmp_path / "nothing"), "--output", str(out)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_report_of_a_judged_run(tmp_path: Path) -> None:
    pytest.importorskip("krippendorff")
    pytest.importorskip("matplotlib")
    from medharness.judges.audit import disagreements, rule_metric

    shutil.copytree(OLD, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    found = disagreements(run.rows("phantom_presence"), run.judgements("phantom_presence"),
                          rule_metric(run, "phantom_presence"))
    assert main(["report", str(tmp_path / "run"), "--output", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"### phantom_presence: {len(found)} disagreeing sample(s)" in text and found
    assert all(f"| {item['row'].sample.id} " in text for item in found)
    assert ("![judge agreement](judge-agreement.png)" in text
            and (tmp_path / "out" / "judge-agreement.png").is_file())


def test_report_with_an_ablated_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--tasks", "phantom_presence", "--limit", "30", "--no-progress", "--no-cache"]
    assert main(["run", "--model", "baseline:majority", *common, "--output", str(tmp_path / "full")]) == 0
    assert main(["run", "--model", "baseline:majority", *common, "--ablate", "blank",
                 "--output", str(tmp_path / "blank")]) == 0
    assert main(["run", "--model", "baseline:constant:no", *common, "--ablate", "blank",
                 "--output", str(tmp_path / "other")]) == 0
    assert main(["report", str(tmp_path / "full"), "--ablated", str(tmp_path / "blank"),
                 "--output", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Ablation: blank" in text
    # a baseline never looks at the picture: blank images change nothing, and the report says so exactly
    row = next(line for line in text.splitlines() if line.startswith("| phantom_presence | yes_no_accuracy"))
    full = (RunDir.open(tmp_path / "full").log.tasks["phantom_presence"].summary
            .metrics["yes_no_accuracy"].value)
    assert [c.strip() for c in row.split("|")[3:10]] == [
        "blank", f"{100 * full:.1f}", f"{100 * full:.1f}", "+0.0 [+0.0, +0.0]", "mcnemar-exact", "1", "30"]
    capsys.readouterr()
    assert main(["report", str(tmp_path / "full"), "--ablated", str(tmp_path / "other"),
                 "--output", str(tmp_path / "out2")]) == 2
    assert "a run of another model" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "full"), "--ablated", str(tmp_path / "full"),
                 "--output", str(tmp_path / "out3")]) == 2
    assert "was not run with --ablate" in capsys.readouterr().err
