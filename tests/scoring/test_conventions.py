"""Named conventions: each reproduces its peer's rule (traps included); the default does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medharness.core.records import Sample
from medharness.scoring.conventions import CONVENTIONS, Convention
from medharness.scoring.metrics import resolve_metrics
from medharness.scoring.normalize import vqa_v2, yes_no_of
from medharness.scoring.parsers import ParserChain

NAMES = ["harness", "llava_med", "lmms_eval", "mumc", "set_token_f1", "yesno_strict"]
# The task's own parser, used by conventions whose parser is None (the harness default).
TASK_PARSER = [{"first_of": {"parsers": ["answer_tag", "short_answer"]}}]
HEADLINE = {"harness": "vqa_accuracy", "mumc": "accuracy", "lmms_eval": "exact_match",
            "yesno_strict": "yesno_strict_accuracy", "set_token_f1": "set_token_f1"}
OPEN_METRICS = ("recall", "precision", "f1", "exact_match", "open_hit")


def run(convention: str, output: str, gold: Any, answer_type: str | None = "CLOSED") -> dict[str, Any]:
    conv = CONVENTIONS.get(convention)
    meta = {"answer_type": answer_type} if answer_type else {}
    sample = Sample(id="1", task="vqa_rad", question="q?", target=gold, meta=meta)
    answer = ParserChain(conv.parser or TASK_PARSER)(output, sample)
    return {s.label: s.score(answer, sample, output) for s in resolve_metrics(conv.metrics)}


def test_registry() -> None:
    assert CONVENTIONS.names() == NAMES
    for name, conv in CONVENTIONS.items():
        assert isinstance(conv, Convention) and conv.name == name
        assert conv.description and conv.reference
        ParserChain(conv.parser or TASK_PARSER)
        assert resolve_metrics(conv.metrics)
    assert CONVENTIONS.get("harness").parser is None
    assert [s.metric.name for s in resolve_metrics(CONVENTIONS.get("harness").metrics)] == [
        "vqa_accuracy", "token_recall", "token_f1"]


# Headline metric per convention (llava_med: `closed` on CLOSED rows, `recall` on OPEN rows).
ROWS = [
    # answer_type, gold, output, harness, mumc, lmms_eval, yesno_strict, llava_med, set_token_f1
    ("CLOSED", "no", "not", 0.0, 0.0, 0.0, 1.0, 1.0, 0.0),  # "not" starts with / contains "no"
    ("CLOSED", "no", "There is a nodule.", 0.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # substring "no" in "nodule"
    ("CLOSED", "no", "Nodular opacity", 0.0, 0.0, 0.0, 1.0, 1.0, 0.0),  # startswith "no"
    ("CLOSED", "yes", "yes or no", 0.0, 0.0, 0.0, 1.0, 1.0, 0.5),  # hedge credited by peers
    ("CLOSED", "no", "yes or no", 0.0, 0.0, 0.0, 0.0, 1.0, 0.5),  # llava credits both golds
    ("CLOSED", "Yes", "Yes, there is a fracture.", 1.0, 0.0, 0.0, 1.0, 1.0, 1 / 3),
    ("CLOSED", "abnormal", "Abnormal.", 1.0, 1.0, 1.0, 0.0, 1.0, 1.0),  # gold not yes/no; "no" in "abnormal"
    ("CLOSED", "left", "Left", 1.0, 1.0, 1.0, 0.0, 0.0, 1.0),  # no yes/no substring: llava miss
    ("OPEN", "X-ray", "x ray", 0.0, 1.0, 1.0, 0.0, 1.0, 0.0),
    ("OPEN", "right lower lobe", "The lesion is in the right lower lobe.", 0.0, 0.0, 0.0, 0.0, 1.0, 0.6),
    ("OPEN", "right lower lobe", "<think>hmm</think><answer>Right lower lobe</answer>",
     1.0, 0.0, 0.0, 0.0, 1.0, 1.0),
    ("OPEN", "right lower lobe", "<answer>right lower lobe<|im_end|>", 1.0, 0.0, 0.0, 0.0, 1.0, 1.0),
    ("OPEN", "right lower lobe", "<think>x</think> Right lower lobe", 0.0, 0.0, 0.0, 0.0, 1.0, 1.0),
]


@pytest.mark.parametrize("answer_type, gold, output, harness, mumc, lmms, yesno, llava, set_f1", ROWS)
def test_vqa_rad_like_rows(answer_type: str, gold: str, output: str, harness: float, mumc: float,
                           lmms: float, yesno: float, llava: float, set_f1: float) -> None:
    expected = {"harness": harness, "mumc": mumc, "lmms_eval": lmms, "yesno_strict": yesno,
                "set_token_f1": set_f1}
    for name, want in expected.items():
        assert run(name, output, gold, answer_type)[HEADLINE[name]] == pytest.approx(want), name
    scores = run("llava_med", output, gold, answer_type)
    if answer_type == "CLOSED":
        assert scores["closed"] == llava
        assert all(scores[m] is None for m in OPEN_METRICS)
    else:
        assert scores["recall"] == pytest.approx(llava)
        assert scores["closed"] is None


@pytest.mark.parametrize("output, gold, expected", [
    # precision, recall, f1, exact_match, open_hit (LLaVA-Med counting; both sides vqa_v2-normalised)
    ("The lesion is in the right lower lobe.", "right lower lobe", (0.5, 1.0, 2 / 3, 0.5, 1.0)),
    ("left left", "left", (1.0, 1.0, 1.0, 0.5, 1.0)),  # repeats count as true positives
    ("right", "left lung", (0.0, 0.0, 0.0, 0.0, 0.0)),
    ("2 lesions", "two", (0.5, 1.0, 2 / 3, 0.5, 1.0)),  # number words -> digits
])
def test_llava_med_open(output: str, gold: str, expected: tuple[float, ...]) -> None:
    scores = run("llava_med", output, gold, "OPEN")
    got = tuple(scores[m] for m in ("precision", "recall", "f1", "exact_match", "open_hit"))
    assert got == pytest.approx(expected)


def test_llava_med_repeats_differ_from_harness_multiset_f1() -> None:
    assert run("harness", "left left", "left", "OPEN")["token_f1"] == pytest.approx(2 / 3)
    assert run("llava_med", "left left", "left", "OPEN")["f1"] == 1.0


@pytest.mark.parametrize("convention, label", [
    ("harness", "vqa_accuracy"), ("mumc", "accuracy"), ("yesno_strict", "yesno_strict_accuracy"),
    ("llava_med", "closed"), ("set_token_f1", "set_token_f1"),
])
def test_empty_output_is_zero(convention: str, label: str) -> None:
    assert run(convention, "", "yes")[label] == 0.0


@pytest.mark.parametrize("gold, output, expected", [
    ("yes", "yes", 1.0),  # no answer_type: a yes/no gold is CLOSED
    ("MRI", "mri", 1.0),  # ... anything else OPEN (simple exact match)
    ("MRI", "mri scan", 0.0),
])
def test_answer_type_fallback(gold: str, output: str, expected: float) -> None:
    assert run("yesno_strict", output, gold, answer_type=None)["yesno_strict_accuracy"] == expected


# --- the real VQA-RAD and SLAKE test files -----------------------------------------------------


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())


def _gold_as_prediction(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for name in NAMES:
        conv = CONVENTIONS.get(name)
        chain, specs = ParserChain(conv.parser or TASK_PARSER), resolve_metrics(conv.metrics)
        for row in rows:
            sample = Sample(id=str(row["qid"]), task="t", question=row["question"], target=row["answer"],
                            meta={"answer_type": row["answer_type"]})
            answer = chain(row["answer"], sample)
            for spec in specs:
                value = spec.score(answer, sample, row["answer"])
                if value is not None:
                    out.setdefault(name, {}).setdefault(spec.label, []).append(value)
    return out


@pytest.mark.shared_data
def test_vqa_rad_gold_counts(vqa_rad_dir: Path) -> None:
    rows = _load(vqa_rad_dir / "testset.json")
    assert len(rows) == 451
    parsed = [yes_no_of(r["answer"]) for r in rows]
    assert (parsed.count("no"), parsed.count("yes")) == (133, 118)
    closed = [r for r, p in zip(rows, parsed) if r["answer_type"] == "CLOSED"]
    assert len(closed) == 272 and sum(yes_no_of(r["answer"]) is None for r in closed) == 21


@pytest.mark.shared_data
def test_slake_english_closed_non_yes_no(slake_dir: Path) -> None:
    english = [r for r in _load(slake_dir / "test.json") if r["q_lang"] == "en"]
    closed = [r for r in english if r["answer_type"] == "CLOSED"]
    assert (len(english), len(closed)) == (1061, 416)
    assert sum(yes_no_of(r["answer"]) is None for r in closed) == 61


@pytest.mark.shared_data
@pytest.mark.parametrize("dataset", ["vqa_rad", "slake"])
def test_gold_as_prediction(dataset: str, request: pytest.FixtureRequest) -> None:
    if dataset == "vqa_rad":
        rows = _load(request.getfixturevalue("vqa_rad_dir") / "testset.json")
    else:
        rows = [r for r in _load(request.getfixturevalue("slake_dir") / "test.json") if r["q_lang"] == "en"]
    scores = _gold_as_prediction(rows)
    n_open = sum(r["answer_type"] == "OPEN" for r in rows)
    closed = [r for r in rows if r["answer_type"] == "CLOSED"]
    for name, label in [("harness", "vqa_accuracy"), ("harness", "token_f1"), ("mumc", "accuracy"),
                        ("lmms_eval", "exact_match"), ("set_token_f1", "set_token_f1"),
                        ("llava_med", "recall"), ("llava_med", "f1"), ("llava_med", "open_hit")]:
        assert set(scores[name][label]) == {1.0}, (name, label)
    assert len(scores["llava_med"]["recall"]) == n_open
    # Peer traps, visible even with perfect predictions: yesno_strict fails every non-yes/no CLOSED
    # gold; llava_med's closed rule fails those without a "yes"/"no" substring ("abnormal" passes).
    non_yes_no = [r["answer"] for r in closed if yes_no_of(r["answer"]) is None]
    assert scores["yesno_strict"]["yesno_strict_accuracy"].count(0.0) == len(non_yes_no)
    llava_misses = [g for g in non_yes_no if "yes" not in vqa_v2(g) and "no" not in vqa_v2(g)]
    assert scores["llava_med"]["closed"].count(0.0) == len(llava_misses)
    assert (len(non_yes_no), len(llava_misses)) == ((21, 18) if dataset == "vqa_rad" else (61, 61))


def test_a_convention_is_recorded_with_its_version_and_an_other_version_is_refused() -> None:
    """harness is at version 2 (negation, JSON answers, markup debris): a run records `harness@2`; a bare name
    is version 1, what runs recorded before versions; another version is refused by name."""
    from medharness.core.errors import ConfigError
    from medharness.scoring.conventions import CONVENTIONS, resolve_convention, split_version
    from medharness.taskfiles.task import load_task, recipe_for

    assert CONVENTIONS.get("harness").qualified == "harness@2" and CONVENTIONS.get("mumc").qualified == "mumc"
    assert split_version("harness") == ("harness", 1) and split_version("harness@2") == ("harness", 2)
    assert resolve_convention("harness@2") is resolve_convention("harness")
    task = load_task("vqa_rad")
    assert recipe_for(task).convention == recipe_for(task, "harness@2").convention == "harness@2"
    assert recipe_for(task, "mumc").convention == "mumc"
    for ref, message in (("harness@1", "implements harness@2; harness@1 is another set of rules"),
                         ("mumc@3", "implements mumc; mumc@3"), ("harness@two", "a whole number"),
                         ("harnes@2", "Did you mean 'harness'")):
        with pytest.raises(ConfigError, match=message):
            recipe_for(task, ref)
