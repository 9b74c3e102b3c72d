"""Re-scoring scores each distinct input once (`scoring.DistinctScores`) and reads rows through a validated
view (`records.RowToScore`): both must give exactly what scoring every `ResultRow` one by one gives."""

from __future__ import annotations

import ast
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

import medharness.scoring.metrics
import medharness.scoring.parsers
from medharness.core.errors import DataError
from medharness.core.records import Generation, ResultRow, RowToScore, Sample, fields_of
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.rescore import score_run
from medharness.runs.runlog import RunDir, parse_rows_to_score
from medharness.scoring.metrics import METRICS, Metric, resolve_metrics
from medharness.scoring.recipe import DistinctScores, Recipe, Scored, _frozen, memoisable, summarise
from medharness.taskfiles.task import load_task, recipe_for

CORPUS = Path(__file__).resolve().parents[1] / "data" / "fuzz" / "outputs"
CASES = [json.loads(line) for path in sorted(CORPUS.glob("*.jsonl"))
         for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


_SAMPLE_FIELDS = TypeAdapter(fields_of(Sample))


def _fields(sample: Sample) -> dict[str, Any]:
    """A sample as re-scoring reads it from its line (`RowToScore`)."""
    return _SAMPLE_FIELDS.validate_json(sample.model_dump_json())


def _one_by_one(recipe: Recipe, rows: list[tuple[Sample, str, str | None]]) -> list[tuple[Any, ...]]:
    return [(*recipe.score_text(s, t, e), e is not None) for s, t, e in rows]


def _distinct(recipe: Recipe, rows: list[tuple[Sample, str, str | None]]) -> tuple[DistinctScores, list[Any]]:
    scores = DistinctScores(recipe)
    for sample, text, error in rows:
        scores.add(_fields(sample), text, error)
    return scores, [scores.results[i] for i in scores.which]


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Equal results, NaN equal to NaN."""
    def key(r: tuple[Any, ...]) -> str:
        return json.dumps([repr(r[0]), {k: repr(v) for k, v in r[1].items()}, r[2]], sort_keys=True)
    return [key(r) for r in a] == [key(r) for r in b]


def _corpus_rows() -> Iterator[tuple[str, str | None, str, list[tuple[Sample, str, str | None]]]]:
    """Per (task, prompt, convention) of the adversarial corpus: every output against every gold of that
    group, each pair asked three times (other id, question and image), plus a failed generation."""
    groups: dict[tuple[str, str | None, str], list[dict[str, Any]]] = {}
    for case in CASES:
        groups.setdefault((case["task"], case.get("convention"), case["prompt"]), []).append(case)
    for (task, convention, prompt), cases in sorted(groups.items(), key=str):
        rows: list[tuple[Sample, str, str | None]] = []
        for n, (gold_case, text_case, ask) in enumerate(itertools.product(cases, cases, range(3))):
            sample = Sample(id=str(n), task=task, question=f"question {ask}?", target=gold_case["gold"],
                            images=(f"img{n % 5}.png",), choices=tuple(gold_case.get("choices", ())),
                            meta=gold_case.get("meta", {}))
            rows.append((sample, text_case["text"], None))
        rows.append((rows[0][0], "yes", "timeout"))
        yield task, convention, prompt, rows


@pytest.mark.parametrize(("task", "convention", "prompt", "rows"),
                         [pytest.param(*group, id=f"{group[0]}-{group[2]}-{group[1]}")
                          for group in _corpus_rows()])
def test_distinct_scoring_equals_scoring_every_row(task: str, convention: str | None, prompt: str,
                                                   rows: list[tuple[Sample, str, str | None]]) -> None:
    recipe = recipe_for(load_task(task), convention, prompt)
    assert memoisable(recipe)
    scores, got = _distinct(recipe, rows)
    assert _same(got, _one_by_one(recipe, rows))
    assert len(scores.results) < len(rows)  # the same pair asked three times was scored once


def test_the_built_in_parsers_and_metrics_never_read_a_samples_question_id_or_images() -> None:
    """The contract that lets DistinctScores leave the question, id and image paths out of its key, checked
    on the source of every built-in parser and metric module."""
    read = []
    for package in (medharness.scoring.parsers, medharness.scoring.metrics):
        for file in sorted(Path(package.__file__).parent.glob("*.py")):  # type: ignore[arg-type]
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr in ("question", "id", "images"):
                    read.append(f"{file.name}:{node.lineno} .{node.attr}")
                if isinstance(node, ast.Constant) and node.value in ("question", "images"):
                    read.append(f"{file.name}:{node.lineno} {node.value!r}")
    assert read == []


def test_rows_differing_in_what_scoring_reads_are_scored_apart() -> None:
    recipe = recipe_for(load_task("vqa_rad"))
    base = Sample(id="1", task="vqa_rad", question="q", target="yes", meta={"answer_type": "CLOSED"})
    rows = [(base, "yes", None),
            # shared
            (base.model_copy(update={"id": "2", "question": "other", "images": ("x.png",)}), "yes", None),
            (base, "no", None),
            (base, "yes", "boom"),
            (base.model_copy(update={"target": "no"}), "yes", None),
            (base.model_copy(update={"meta": {"answer_type": "OPEN"}}), "yes", None),
            (base.model_copy(update={"choices": ("yes", "no")}), "yes", None)]
    scores, got = _distinct(recipe, rows)
    assert scores.which == [0, 0, 1, 2, 3, 4, 5]
    assert _same(got, _one_by_one(recipe, rows))


def test_metas_are_kept_once_each_and_give_each_row_its_own() -> None:
    """Re-scoring keeps each distinct meta once (`metas`, `meta_which`); every row reads back its own meta
    (values that compare equal but print apart stay apart), and the group columns equal per-row metas'."""
    recipe = recipe_for(load_task("vqa_rad"))
    metas: list[dict[str, Any]] = [{"answer_type": v} for v in ("CLOSED", "OPEN", "CLOSED")]
    metas += [{}, *({"answer_type": v} for v in (0.0, -0.0, 1, True, 1.0, "OPEN"))]
    rows = [(Sample(id=str(i), task="vqa_rad", question="q", target="yes", meta=m), "yes", None)
            for i, m in enumerate(metas)]
    scores, _ = _distinct(recipe, rows)
    assert [repr(scores.metas[i]) for i in scores.meta_which] == [repr(m) for m in metas]
    assert len(scores.metas) == 8
    clusters = [f"id:{i}" for i in range(len(rows))]
    which = np.asarray(scores.which)
    coded = Scored.build(scores.results, scores.samples, which, clusters, scores.metas, recipe,
                         ["answer_type"], "item", np.asarray(scores.meta_which))
    per_row = Scored.build(scores.results, scores.samples, which, clusters, metas, recipe, ["answer_type"],
                           "item")
    a, b = coded.meta["answer_type"], per_row.meta["answer_type"]
    assert a.names == b.names == ["CLOSED", "OPEN", None, "0.0", "-0.0", "1", "True", "1.0"]
    assert a.codes.tolist() == b.codes.tolist()


def test_memo_keys_keep_json_values_of_different_types_apart() -> None:
    values = ["1", 1, 1.0, True, None, ["1"], [1], {"a": 1}, {"a": "1"}, [[1]], [{"a": 1}], 0.0, -0.0,
              {"a": 0.0}, {"a": -0.0}]
    assert len({_frozen(v) for v in values}) == len(values)
    assert _frozen({"a": [1, 2]}) == _frozen({"a": [1, 2]})


def test_a_plugin_or_batch_metric_is_scored_on_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def by_question(answer: Any, sample: Sample, text: str) -> float:
        calls.append(sample.question)
        return float(len(sample.question))

    monkeypatch.setitem(METRICS._entries, "by_question", Metric(name="by_question", fn=by_question))
    monkeypatch.setitem(METRICS._entries, "batched", Metric(name="batched", fn=lambda a, s, t: 1.0,
                                                          batch=lambda items: [1.0] * len(items)))
    task = load_task("vqa_rad")
    rows = [(Sample(id=str(i), task="vqa_rad", question="q" * (i + 1), target="yes"), "yes", None)
            for i in range(3)]
    for name in ("by_question", "batched"):
        recipe = Recipe("harness", recipe_for(task).parser, resolve_metrics(["exact_match", name]))
        assert not memoisable(recipe)
        scores, got = _distinct(recipe, rows)
        assert scores.which == [0, 1, 2]
        assert _same(got, _one_by_one(recipe, rows))
    assert calls == ["q", "qq", "qqq"] * 2  # scored row by row, then again by _one_by_one


def test_rows_that_never_repeat_stop_being_keyed_after_the_probe() -> None:
    recipe = recipe_for(load_task("vqa_rad"))
    n = DistinctScores.PROBE_ROWS + 500
    rows = [(Sample(id=str(i), task="vqa_rad", question=f"q{i}", target=("yes", "no", "left")[i % 3],
                    images=(f"{i}.png",)), f"answer {i}", None) for i in range(n)]
    scores, got = _distinct(recipe, rows)
    assert scores._seen is None and scores.which == list(range(n))
    assert _same(got, _one_by_one(recipe, rows))
    # every row scored, on one Sample per (target, choices, meta): three built
    assert scores._built is not None and len(scores._built) == 3


def test_golds_that_never_repeat_get_a_sample_each_and_none_kept() -> None:
    recipe = recipe_for(load_task("vqa_rad"))
    n = DistinctScores.PROBE_ROWS + 500
    rows = [(Sample(id=str(i), task="vqa_rad", question="q", target=f"gold {i}"), f"answer {i % 7}", None)
            for i in range(n)]
    scores, got = _distinct(recipe, rows)
    assert scores._seen is None and scores._built is None
    assert _same(got, _one_by_one(recipe, rows))


# --- the view of a row ------------------------------------------------------------------------

GOOD_SAMPLE = {"id": "1", "task": "t", "question": "q", "target": "yes", "images": ["a.png"],
               "choices": ["a"], "meta": {"k": 1}}
GOOD_GENERATION = {"sample_id": "1", "text": "yes", "finish_reason": None, "prompt_tokens": 3,
                   "completion_tokens": 1, "model": "m", "model_version": None, "error": None}


def _variants(good: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield good
    yield {**good, "unknown": 1}
    for key in good:
        yield {k: v for k, v in good.items() if k != key}
        for bad in (None, 1, 1.5, True, "x", [], ["x"], [1], {}, {"a": 1}):
            yield {**good, key: bad}


@pytest.mark.parametrize(("model", "good"), [(Sample, GOOD_SAMPLE), (Generation, GOOD_GENERATION)])
def test_the_view_accepts_and_refuses_what_the_model_does(model: Any, good: dict[str, Any]) -> None:
    view = TypeAdapter(fields_of(model))
    checked = 0
    for fields in _variants(good):
        try:
            expected = model.model_validate(fields)
        except ValidationError:
            with pytest.raises(ValidationError):
                view.validate_python(fields)
        else:
            assert model.model_validate(view.validate_python(fields)) == expected
        checked += 1
    assert checked > 60


def test_a_row_is_read_as_the_full_record_reads_it(tmp_path: Path) -> None:
    row = ResultRow(task="t", task_version="1", sample=Sample.model_validate(GOOD_SAMPLE), prompt_hash="h",
                    generation=Generation.model_validate(GOOD_GENERATION),
                    answer=medharness.core.records.Answer("x"), scores={"a": math.nan})
    line = row.model_dump_json()
    (view,) = parse_rows_to_score(tmp_path / "f.jsonl", [line])
    assert view["task_version"] == "1"
    assert Sample.model_validate(view["sample"]) == row.sample
    assert Generation.model_validate(view["generation"]) == row.generation
    bad = json.loads(line)
    bad["sample"]["images"] = "a.png"
    with pytest.raises(DataError, match=r"f\.jsonl:1: not a ResultRow record"):
        list(parse_rows_to_score(tmp_path / "f.jsonl", [json.dumps(bad), line]))
    read = TypeAdapter(RowToScore).validate_json(json.dumps({**json.loads(line), "extra": 1}))
    # the answer, scores and unknown keys: skipped
    assert set(read) == {"task_version", "sample", "generation"}


# --- whole runs -------------------------------------------------------------------------------


def _scored_one_by_one(run_dir: Path, convention: str | None) -> list[dict[str, Any]]:
    run = RunDir.open(run_dir)
    out = []
    for name in run.tasks():
        entry = run.log.tasks[name]
        task = load_task(Path(entry.path) if entry.path else name,
                         {"prompt": entry.prompt} if entry.prompt else {})
        recipe = recipe_for(task, convention)
        rows = [r.model_copy(update=dict(zip(("answer", "scores"), recipe.score(r.sample, r.generation),
                                             strict=True)))
                for r in run.rows(name)]
        summary = summarise(rows, recipe, task.config.group_by, task.name, task.version,
                            task.config.cluster_by)
        out.append(summary.model_copy(update={"n_expected": entry.n_selected}).model_dump(mode="json"))
    return out


@pytest.mark.parametrize("convention", [None, "mumc", "llava_med"])
def test_score_run_equals_scoring_every_row_on_a_real_vqa_rad_run(tmp_path: Path, vqa_rad_dir: Path,
                                                                   convention: str | None) -> None:
    """451 real VQA-RAD questions answered by three baselines (so answers recur across questions),
    re-scored."""
    out = tmp_path / "run"
    Runner(RunConfig(model="baseline:majority", tasks="vqa_rad", seed=1, data_dir=str(vqa_rad_dir)),
           out).run()
    file = out / "samples" / "vqa_rad.jsonl"
    lines = file.read_text().splitlines()
    answers = ["yes", "No.", "the left lung", "<answer>yes</answer>", "yes or no", "CT", "", "mri scan"]
    edited = []
    for i, line in enumerate(lines):
        row = json.loads(line)
        row["generation"]["text"] = answers[i % len(answers)] if i % 3 else row["generation"]["text"]
        edited.append(json.dumps(row))
    file.write_text("\n".join(edited) + "\n")
    got = [s.model_dump(mode="json") for s in score_run(out, convention, workers=1)]
    assert got == _scored_one_by_one(out, convention)
    assert got[0]["n"] == 451


def test_score_run_equals_scoring_every_row_on_classification_grades_and_boxes(tmp_path: Path) -> None:
    """The phantom family: classes, counts, boxes, sides and grades (phantom_size's QWK, a corpus metric that
    reads the samples again)."""
    out = tmp_path / "run"
    Runner(RunConfig(model="baseline:random", tasks="phantom", limit=60, seed=5), out).run()
    got = [s.model_dump(mode="json") for s in score_run(out, workers=1)]
    assert got == _scored_one_by_one(out, None)
    assert {s["task"] for s in got} == {"phantom_presence", "phantom_count", "phantom_box", "phantom_side",
                                        "phantom_size"}
    assert "qwk" in next(s for s in got if s["task"] == "phantom_size")["metrics"]
    assert np.isfinite([m["value"] for s in got for m in s["metrics"].values()]).all()
