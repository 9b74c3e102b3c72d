"""Parsers: exact values on ordinary and adversarial outputs; never raise; fast on 1 MB."""

from __future__ import annotations

from typing import Any

import pytest

from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.boxes import from_absolute, to_absolute
from medharness.scoring.parsers import PARSERS, ParserChain, strip_end_markers

OPTIONS = ("pneumonia", "edema", "normal")
CLASSES = ("nevus", "melanocytic nevus", "melanoma", "benign keratosis")
META = {"image_size": [640, 480], "resized_size": [448, 336]}


def sample(choices: tuple[str, ...] = (), **meta: Any) -> Sample:
    return Sample(id="s1", task="t", question="q?", target="x", choices=choices, meta={**META, **meta})


def parse(name: str, text: str, choices: tuple[str, ...] = (), **args: Any) -> Answer:
    answer = PARSERS.get(name)(text, sample(choices), **args)
    assert isinstance(answer, Answer) and answer.parser == name
    if answer.value is None:
        assert answer.note, f"{name} gave None without a note"
    return answer


def test_registered_names() -> None:
    assert PARSERS.names() == ["after_think", "answer_tag", "boxed", "choice", "first_of", "integer",
                               "json_bbox", "label", "raw", "short_answer", "think", "yes_no"]


@pytest.mark.parametrize("text, expected", [
    ("  yes \n", "yes"),
    ("", None),
    (" \n\t", None),
])
def test_raw(text: str, expected: str | None) -> None:
    assert parse("raw", text).value == expected


@pytest.mark.parametrize("text, expected", [
    ("a<|im_end|>", "a"),
    ("a <|im_end|><|endoftext|>\n", "a"),
    ("<|im_end|> a", "<|im_end|> a"),
])
def test_strip_end_markers(text: str, expected: str) -> None:
    assert strip_end_markers(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("  Yes.  ", "Yes"),
    ("Answer: no<|im_end|>", "no"),
    ("The answer is: Left lung.\nExplanation: the opacity...", "Left lung"),
    ("\n\nMRI\n", "MRI"),
    ("Final answer: 3.5", "3.5"),
    ("the final answer is yes...", "yes"),
    ("Answering this: yes", "Answering this: yes"),  # "answer" must be a whole word
    ("The answer is\nno", "no"),  # the prefix line is empty: next line
    ("<|im_end|>", None),
    ("", None),
    ("Answer:", None),
    ("肺炎。", "肺炎。"),
])
def test_short_answer(text: str, expected: str | None) -> None:
    assert parse("short_answer", text).value == expected


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{B}", "B"),
    (r"x \boxed{\text{Melanoma}} y", "Melanoma"),
    (r"\boxed{A} first, then \boxed{C}", None),  # two different answers: a hedge
    (r"\boxed{C} first, then \boxed{ c }", "c"),  # the same answer twice: the last one
    (r"<think>\boxed{A}?</think> \boxed{C}", "C"),  # a box tried out in the reasoning is no answer
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{a{b}c}", "a{b}c"),
    (r"\boxed{a}} extra }", "a"),  # fake extra closing braces are outside
    (r"\boxed{{a}", None),  # unbalanced
    (r"\boxed{a} and \boxed{b", None),  # the last one is unbalanced
    (r"\boxed{\text{a} and \text{b}}", r"\text{a} and \text{b}"),  # not a single wrapper
    (r"\boxed { 2 }", "2"),
    (r"\boxed{}", None),
    (r"\boxed{\text{}}", None),
    ("no box here {a}", None),
    ("", None),
])
def test_boxed(text: str, expected: str | None) -> None:
    assert parse("boxed", text).value == expected


@pytest.mark.parametrize("text, expected", [
    ("<think>x</think><answer>yes</answer>", "yes"),
    ("<answer>a</answer> then <answer>b</answer>", None),  # two different answers: a hedge
    ("<answer>yes</answer><answer>no</answer>", None),
    ("<answer>Yes</answer> so <answer>yes.</answer>", "yes."),  # the same answer twice: the last one
    ("<think><answer>no</answer>?</think><answer>yes</answer>", "yes"),  # tried out in the reasoning
    ("<answer>yes or no</answer>", None),
    ("<answer> no <|im_end|>", "no"),  # missing </answer>: to the end, marker cut
    ("<answer>left lung", "left lung"),
    ("<Answer>Yes</Answer>", "Yes"),
    ("<answer> </answer>", None),
    ("<think>yes</think>", None),  # the answer in the wrong tag
    ("<ans>yes</ans>", None),
    ("", None),
])
def test_answer_tag(text: str, expected: str | None) -> None:
    assert parse("answer_tag", text).value == expected


def test_several_last_keeps_the_peers_rule_and_bad_values_are_refused() -> None:
    assert parse("answer_tag", "<answer>a</answer> then <answer>b</answer>", several="last").value == "b"
    assert parse("boxed", r"\boxed{A} first, then \boxed{C}", several="last").value == "C"
    with pytest.raises(ConfigError, match="several must be"):
        parse("answer_tag", "<answer>a</answer>", several="first")


@pytest.mark.parametrize("name, text, expected", [
    ("think", "<think> a b </think> c", "a b"),
    ("think", "a b</think> c", "a b"),  # <think> was in the prompt
    ("think", "<think>unclosed", None),
    ("think", "<think></think>x", None),
    ("think", "no tags", None),
    ("after_think", "<think>a</think> yes<|im_end|>", "yes"),
    ("after_think", "x</think>y</think> z", "z"),
    ("after_think", "<think>a</think>", None),
    ("after_think", "plain", None),
])
def test_think_and_after_think(name: str, text: str, expected: str | None) -> None:
    assert parse(name, text).value == expected


@pytest.mark.parametrize("text, expected", [
    ("<answer>yes</answer>", "yes"),
    ("<think>r</think> no", "no"),
    ("plain text", "plain text"),
    ("", None),
])
def test_first_of(text: str, expected: str | None) -> None:
    assert parse("first_of", text, parsers=["answer_tag", "after_think", "raw"]).value == expected


def test_first_of_needs_parsers() -> None:
    with pytest.raises(ConfigError):
        parse("first_of", "x")


@pytest.mark.parametrize("text, expected", [
    ("B", "B"), ("(b)", "B"), ("B.", "B"), ("B)", "B"), ("B: edema", "B"), ("B) edema", "B"),
    ("(C) normal.", "C"), ("The answer is B", "B"), ("Answer: (C).", "C"), ("The correct answer is A", "A"),
    ("Option C", "C"), ("edema", "B"), ("  Normal. ", "C"), ("B<|im_end|>", "B"),
    ("B) normal", None),  # the letter names another option's text
    ("A, B", None), ("A and B", None), ("(A) or (B)", None), ("A. B", None), ("A) or C", None),
    ("B) edema (B)", "B"), ("A) pneumonia. A common finding.", "A"),
    ("E", None),  # out of range
    ("B\nbecause the lungs...", None),  # chain short_answer first to take the first line
    ("edema or pneumonia", None), ("", None), ("Answer", None),
])
def test_choice(text: str, expected: str | None) -> None:
    assert parse("choice", text, OPTIONS).value == expected


def test_choice_without_options_is_unparsed() -> None:
    assert parse("choice", "A").note == "sample has no choices"


@pytest.mark.parametrize("text, expected", [
    ("Melanoma", "melanoma"),
    ("The lesion is melanoma.", "melanoma"),
    ("melanocytic nevus", "melanocytic nevus"),
    ("This is a melanocytic nevus", "melanocytic nevus"),  # "nevus" inside the longer class is dropped
    ("a nevus", "nevus"),
    ("Benign-keratosis", None),  # simple() deletes "-": "benignkeratosis"
    ("benign keratosis", "benign keratosis"),
    ("melanoma or nevus", None),
    ("melanomas", None),
    ("", None),
    ("not melanoma", None), ("It isn't a nevus.", None), ("never melanoma", None),  # negated: a hedge
    ("not a melanoma, a nevus", None), ("a nevus, not melanoma", None),
    ("melanoma, not benign", "melanoma"),  # the negated word is no class name
])
def test_label(text: str, expected: str | None) -> None:
    assert parse("label", text, CLASSES).value == expected


@pytest.mark.parametrize("text, expected", [
    ("2", 2), ("Grade 3.", 3), ("grade 2 (2)", 2), ("2.0", 2), ("T2 lesion, grade 1", 1), ("\\boxed{4}", 4),
    ("2 or 3", None), ("2.5", None), ("none", None), ("3rd", None), ("", None), ("1" * 5000, None),
    ("-1", -1), ("\\boxed{-1}", -1), ("grade -2", -2), ("\u22123", -3),  # a sign is the number's own
    ("grade 2-3", None), ("1-2", None),                          # a dash between two numbers: two numbers
    ("not 2", None), ("never 3", None), ("isn't a 2", None), ("\\boxed{not 2}", None),  # negated: a hedge
])
def test_integer(text: str, expected: int | None) -> None:
    assert parse("integer", text).value == expected


@pytest.mark.parametrize("text, expected", [
    ("Yes.", "yes"), ("no, there is none", "no"), ("yes or no", None), ("nodule", None), ("not", None),
    ("not yes", None), ("<answer>not yes</answer>", None), ("Not no.", None), ("isn't a yes", None),
    ("never no", None), ("No, not present", "no"), ("Yes, it is not normal", "yes"),
])
def test_yes_no(text: str, expected: str | None) -> None:
    assert parse("yes_no", text).value == expected


@pytest.mark.parametrize("text, expected", [
    ("[10, 20, 30, 40]", [10.0, 20.0, 30.0, 40.0]),
    ('```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "mass"}]\n```', [10.0, 20.0, 30.0, 40.0]),
    ('{"bbox": [10.5, 20, 3e1, 40.25]}', [10.5, 20.0, 30.0, 40.25]),
    ("[[10,20,30,40]]", [10.0, 20.0, 30.0, 40.0]),
    ("[1,2,3,4] and again [1, 2, 3, 4]", [1.0, 2.0, 3.0, 4.0]),  # the same box twice is one box
    ("[1,2,3,4] [5,6,7,8]", None),  # two different boxes: ambiguous
    ("[30, 20, 10, 40]", None),  # reversed: never swapped
    ("[1e999, 1, 2, 3]", None),  # non-finite
    ("[NaN, 1, 2, 3]", None),
    ("[10, 20, 30]", None),
    ("[10, 20, 30, 40, 50]", None),
    ("(10, 20, 30, 40)", None),
    ("", None),
])
def test_json_bbox_absolute(text: str, expected: list[float] | None) -> None:
    assert parse("json_bbox", text).value == expected


@pytest.mark.parametrize("pick, expected", [("first", [1.0, 2.0, 3.0, 4.0]), ("last", [5.0, 6.0, 7.0, 8.0])])
def test_json_bbox_pick(pick: str, expected: list[float]) -> None:
    assert parse("json_bbox", "[1,2,3,4] [5,6,7,8]", pick=pick).value == expected


@pytest.mark.parametrize("coords, text, expected", [
    ("norm1000", "[100, 200, 500, 750]", [64.0, 96.0, 320.0, 360.0]),  # x * 640/1000, y * 480/1000
    ("resized", "[56, 42, 224, 168]", [80.0, 60.0, 320.0, 240.0]),  # x * 640/448, y * 480/336
    ("absolute", "[64, 96, 320, 360]", [64.0, 96.0, 320.0, 360.0]),
])
def test_json_bbox_coords(coords: str, text: str, expected: list[float]) -> None:
    assert parse("json_bbox", text, coords=coords).value == pytest.approx(expected)


def test_json_bbox_needs_sizes() -> None:
    no_size = Sample(id="s", task="t", question="q", target=None)
    assert PARSERS.get("json_bbox")("[1,2,3,4]", no_size, coords="norm1000").value is None
    assert PARSERS.get("json_bbox")("[1,2,3,4]", no_size, coords="absolute").value == [1.0, 2.0, 3.0, 4.0]
    with_size = Sample(id="s", task="t", question="q", target=None, meta={"image_size": [100, 100]})
    assert PARSERS.get("json_bbox")("[1,2,3,4]", with_size, coords="resized").value is None
    got = PARSERS.get("json_bbox")("[1,2,3,4]", with_size, coords="resized", resized_size=[50, 50])
    assert got.value == [2.0, 4.0, 6.0, 8.0]
    with pytest.raises(ConfigError):
        PARSERS.get("json_bbox")("[1,2,3,4]", with_size, coords="pixels")


@pytest.mark.parametrize("coords", ["absolute", "norm1000", "resized"])
def test_box_round_trip(coords: str) -> None:
    box, size, resized = [12.0, 34.5, 300.0, 470.25], [640, 480], [448, 336]
    declared = from_absolute(box, coords, size, resized)
    assert to_absolute(declared, coords, size, resized) == pytest.approx(box)
    text = f'<answer>[{{"bbox_2d": {[round(v, 6) for v in declared]}, "label": "x"}}]</answer>'
    assert parse("json_bbox", text, coords=coords).value == pytest.approx(box, abs=1e-3)


@pytest.mark.parametrize("steps, text, expected", [
    (["boxed", "integer"], r"<think>grade 1 or 2?</think> \boxed{2}", 2),
    (["answer_tag", "yes_no"], "<answer>No.</answer>", "no"),
    (["answer_tag", "yes_no"], "<answer>yes or no</answer>", None),
    (["short_answer", "choice"], "B\nbecause...", "B"),
    (["boxed", "label"], r"\boxed{\text{melanoma}}", "melanoma"),
    (["answer_tag", "json_bbox"], '<think>[0,0,1,1]?</think><answer>[10,20,30,40]</answer>',
     [10.0, 20.0, 30.0, 40.0]),
])
def test_chains(steps: list[str], text: str, expected: Any) -> None:
    s = Sample(id="s", task="t", question="q", target=None, choices=OPTIONS if "choice" in steps else CLASSES)
    assert ParserChain(steps)(text, s).value == expected


MEGABYTE = 1_000_000
HOSTILE = [
    "", " ", "\x00", "\n" * 10, "é🙂肺" * 5, "yes" * (MEGABYTE // 3), "a" * MEGABYTE, "1" * MEGABYTE,
    "(" * MEGABYTE, "{" * MEGABYTE, "[" * MEGABYTE, "\\boxed{" * (MEGABYTE // 7),
    "<answer>" * (MEGABYTE // 8), "<think>" * (MEGABYTE // 7), "[1," * (MEGABYTE // 3),
    "[1.1.1.1" * (MEGABYTE // 8), "1 " * (MEGABYTE // 2), "(" + "1" * MEGABYTE,
    "\\boxed{" + "{a}" * (MEGABYTE // 3), "Answer " * (MEGABYTE // 7), "melanoma nevus " * (MEGABYTE // 15),
    "\ud800", "\\boxed{" * (MEGABYTE // 14) + "}" * (MEGABYTE // 14),
    "<answer>yes</answer>" * (MEGABYTE // 20), "yes\n" * (MEGABYTE // 4), "\\boxed{a}" * (MEGABYTE // 9),
]


@pytest.mark.timeout(120)  # a hang guard (a quadratic parser on 1 MB never ends), not a speed target
@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_parsers_never_raise_on_megabyte_inputs(text: str) -> None:
    args = {"first_of": {"parsers": ["answer_tag", "raw"]}, "json_bbox": {"coords": "norm1000"}}
    for name in PARSERS.names():
        answer = PARSERS.get(name)(text, sample(CLASSES), **args.get(name, {}))
        assert isinstance(answer, Answer), name


@pytest.mark.parametrize(("name", "text", "choices", "expected"), [
    ("short_answer", '{"answer":"yes"}', (), "yes"),        # lm-eval's JSON output, no space after the colon
    ("short_answer", '{"answer": "yes"}', (), "yes"),
    ("short_answer", '```json\n{"Answer": "left lung"}\n```', (), "left lung"),
    ("yes_no", '{"answer":"no"}', (), "no"),
    ("yes_no", '{"final_answer":"not yes"}', (), None),      # what it holds is read by the usual rules
    ("integer", '{"answer": 3}', (), 3),
    ("choice", '{"answer":"B"}', OPTIONS, "B"),
    ("label", '{"answer":"melanoma"}', CLASSES, "melanoma"),
    ("short_answer", "{", (), None),                         # markup debris is no answer
    ("short_answer", "<>{}", (), None),
    ("short_answer", '{"answer": true}', (), '{"answer": true}'),  # no bool guessed into yes / no
    ("yes_no", '{"answer": true}', (), None),
    ("json_bbox", '{"answer": [1, 2, 3, 4]}', (), [1.0, 2.0, 3.0, 4.0]),  # a box object is left as it is
])
def test_a_json_object_with_an_answer_key_is_read_as_its_answer(
        name: str, text: str, choices: tuple[str, ...], expected: Any) -> None:
    assert parse(name, text, choices).value == expected
