"""The console without a terminal (a log file, CI, nohup): periodic progress lines, and how many generations
came from the response cache."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.cli_output import ProgressLines
from medharness.runs.runlog import RunDir


class Clock:
    """A settable clock, so the test says when time passes instead of waiting for it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(lines: ProgressLines, clock: Clock, calls: list[tuple[float, str, int, int]]) -> list[str]:
    for at, task, done, total in calls:
        clock.now = at
        lines(task, done, total)
    stream = lines.stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue().splitlines()


def test_a_line_at_start_then_at_most_one_per_interval_then_at_the_end() -> None:
    clock = Clock()
    lines = ProgressLines(every=30.0, stream=io.StringIO(), clock=clock)
    out = feed(lines, clock, [(0, "vqa_rad", 0, 100), (10, "vqa_rad", 8, 100), (29, "vqa_rad", 16, 100),
                              (31, "vqa_rad", 24, 100), (40, "vqa_rad", 32, 100), (62, "vqa_rad", 48, 100),
                              (125, "vqa_rad", 100, 100), (126, "vqa_rad", 100, 100)])
    assert out == [
        "vqa_rad: starting, 0/100 samples done",
        "vqa_rad: 24/100 samples (0.77 samples/s, 0m31s elapsed, about 1m38s left)",
        "vqa_rad: 48/100 samples (0.77 samples/s, 1m02s elapsed, about 1m07s left)",
        "vqa_rad: 100/100 samples (0.80 samples/s, 2m05s elapsed)",
    ]


def test_a_resumed_task_counts_its_pace_from_where_it_started() -> None:
    clock = Clock()
    lines = ProgressLines(every=30.0, stream=io.StringIO(), clock=clock)
    out = feed(lines, clock, [(0, "slake", 900, 1000), (50, "slake", 1000, 1000)])
    assert out == ["slake: starting, 900/1000 samples done",
                   "slake: 1000/1000 samples (2.00 samples/s, 0m50s elapsed)"]


def test_no_progress_prints_only_the_end_line_and_a_finished_task_prints_once() -> None:
    clock = Clock()
    quiet = ProgressLines(every=None, stream=io.StringIO(), clock=clock)
    assert feed(quiet, clock, [(0, "a", 0, 4), (100, "a", 2, 4), (200, "a", 4, 4)]) == [
        "a: 4/4 samples (0.02 samples/s, 3m20s elapsed)"]
    done = ProgressLines(every=30.0, stream=io.StringIO(), clock=clock)
    assert feed(done, clock, [(0, "b", 3, 3)]) == ["b: 3/3 samples"]  # nothing to do (a finished resume)


def test_run_says_how_many_generations_came_from_the_cache(tmp_path: Path, tiny_models: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Two identical runs of a real tiny model: the second takes from the response cache every non-empty
    answer (empty ones are never cached), and the console says so, matching run.json. Under pytest stderr is
    no terminal, so the progress comes as lines."""
    def run(name: str) -> tuple[str, str, RunDir]:
        out = tmp_path / name
        argv = ["run", "--model", str(tiny_models["qwen2_vl"]), "--tasks", "phantom_presence", "--limit",
                "10", "--max-new-tokens", "6", "--cache-dir", str(tmp_path / "cache"), "--output", str(out)]
        assert main(argv) == 0
        captured = capsys.readouterr()
        return captured.out, captured.err, RunDir.open(out)

    first_out, first_err, _ = run("a")
    assert "phantom_presence: starting, 0/10 samples done" in first_err
    assert re.search(r"phantom_presence: 10/10 samples \(\d+\.\d\d samples/s", first_err)
    assert re.search(r"generations this time: 10 \(0 from the response cache .*, 10 by the model\)",
                     first_out)
    second_out, _, second = run("b")
    usage = second.log.usage
    assert usage is not None and usage.cache is not None and usage.cache.hits > 0
    assert f"generations this time: 10 ({usage.cache.hits} from the response cache" in second_out
    assert f", {usage.model_calls} by the model)" in second_out and usage.cache.hits + usage.model_calls == 10


def test_a_backend_that_is_never_cached_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "baseline:majority", "--tasks", "phantom_count", "--limit", "3",
                 "--output", str(tmp_path / "r")]) == 0
    assert "generations this time: 3, none from the response cache (not used" in capsys.readouterr().out
