"""`score RUN_DIR` split over worker processes gives the summary one process gives, and its errors name the
file's true line (a worker validates lines numbered as in the file)."""

from __future__ import annotations

from pathlib import Path

import pytest

import medharness.runs.rescore as rescore_module
from medharness.core.errors import DataError
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.rescore import score_run


@pytest.fixture()
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real baseline run of 120 samples of two tasks, with workers allowed from 30 rows each."""
    out = tmp_path / "run"
    Runner(RunConfig(model="baseline:random", tasks="phantom_presence,phantom_count", limit=120, seed=3),
           out).run()
    monkeypatch.setattr(rescore_module, "ROWS_PER_WORKER", 30)
    return out


@pytest.mark.parametrize("convention", [None, "mumc"])
def test_workers_give_the_summary_of_one_process(run_dir: Path, convention: str | None) -> None:
    one = [s.model_dump() for s in score_run(run_dir, convention, workers=1)]
    for workers in (2, 3):
        assert [s.model_dump() for s in score_run(run_dir, convention, workers=workers)] == one
    assert one[0]["n"] == 120 and one[0]["metrics"]  # intervals included: the same seeded bootstrap


def test_a_bad_line_in_a_later_share_is_named_by_its_line_in_the_file(run_dir: Path) -> None:
    file = run_dir / "samples" / "phantom_count.jsonl"
    lines = file.read_text().split("\n")
    lines[99] = '{"task": "phantom_count"}'
    file.write_text("\n".join(lines))
    with pytest.raises(DataError, match=rf"{file}:100: not a ResultRow record"):
        score_run(run_dir, workers=3)


def test_a_sample_twice_across_shares_is_refused(run_dir: Path) -> None:
    file = run_dir / "samples" / "phantom_count.jsonl"
    lines = file.read_text().rstrip("\n").split("\n")
    file.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(DataError, match="appears twice"):
        score_run(run_dir, workers=3)


def test_a_torn_final_line_is_skipped_in_the_last_share(run_dir: Path) -> None:
    file = run_dir / "samples" / "phantom_count.jsonl"
    text = file.read_text()
    file.write_text(text + text.split("\n")[0][:40])  # a kill mid-write: no newline after it
    summaries = {s.task: s for s in score_run(run_dir, workers=3)}
    assert summaries["phantom_count"].n == 120


def test_spawned_workers_give_the_summary_of_one_process(run_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the platform has no fork (Windows, macOS by default), workers are spawned and sent their
    lines."""
    one = [s.model_dump() for s in score_run(run_dir, workers=1)]
    monkeypatch.setattr(rescore_module.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert [s.model_dump() for s in score_run(run_dir, workers=2)] == one


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shares_are_the_files_lines_in_order_numbered_as_in_the_file(n: int) -> None:
    """Workers decode and split their own share of the file: together the shares are the file's lines, each
    numbered from its first line's number in the file, whatever the line lengths and final newline."""
    texts = ["", "\n", "a", "a\n", "a\nbb\n\nccc", "a\nbb\n\nccc\n", "\n\n\n", "x" * 50 + "\ny\n" + "z" * 3,
             "\n".join(str(i) * (i % 7) for i in range(40)), "é\nü\n" * 9]
    for text in texts:
        raw = text.encode()
        shares = rescore_module._shares(raw, n)
        lines: list[str] = []
        for start, end, first in shares:
            assert first == len(lines) + 1
            lines += raw[start:end].decode().split("\n")
        assert lines == text.split("\n") and 1 <= len(shares) <= n


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_file_that_is_not_text_gets_one_process_error_whatever_its_share(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, start_method: str) -> None:
    """The first byte that is not UTF-8 (or else the first NUL) is the error, named by its line, before any
    row's: as reading the whole file in one process gives it, though each worker decodes its own share."""
    if start_method == "spawn":
        monkeypatch.setattr(rescore_module.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    file = run_dir / "samples" / "phantom_count.jsonl"
    lines = file.read_bytes().split(b"\n")
    lines[9] = b'{"task": "phantom_count"}'  # a bad row in the first share
    for bad, expected in [(b"\xff", r":100: the run file is not UTF-8 \(byte 0xff at offset \d+\)"),
                          (b"\x00", r":100: the run file holds a NUL byte")]:
        broken = [*lines]
        broken[99] = broken[99][:30] + bad + broken[99][30:]  # a later share's
        file.write_bytes(b"\n".join(broken))
        messages = []
        for workers in (1, 3):
            with pytest.raises(DataError, match=expected) as caught:
                score_run(run_dir, workers=workers)
            messages.append(str(caught.value))
        assert messages[0] == messages[1]


def test_a_byte_order_mark_is_dropped_by_the_first_share_only(run_dir: Path) -> None:
    one = [s.model_dump() for s in score_run(run_dir, workers=1)]
    file = run_dir / "samples" / "phantom_count.jsonl"
    file.write_bytes(b"\xef\xbb\xbf" + file.read_bytes())
    assert [s.model_dump() for s in score_run(run_dir, workers=1)] == one
    assert [s.model_dump() for s in score_run(run_dir, workers=3)] == one


def test_a_task_is_split_only_where_each_share_gets_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """As many shares as processes allowed and ROWS_PER_WORKER lines each allow (one at least), counted in the
    same pass that cuts them."""
    monkeypatch.setattr(rescore_module, "ROWS_PER_WORKER", 10)
    for n_rows in (0, 5, 19, 20, 29, 30, 45, 100):
        raw = b"".join(b'{"row": %d}\n' % i for i in range(n_rows))
        for most in (1, 2, 3, 8):
            shares, n_lines = rescore_module._split(raw, most)
            assert n_lines == len(raw.decode().split("\n"))
            assert len(shares) == max(1, min(most, n_lines // 10))
            assert b"\n".join(raw[start:end] for start, end, _ in shares) == raw
