"""Normalisers pinned to exact outputs (docs/conventions.md), the strict yes/no reader, speed."""

from __future__ import annotations

import pytest

from medharness.core.errors import ConfigError
from medharness.scoring.normalize import NORMALIZERS, drop_parentheticals, normalize, tokens, yes_no_of


def test_registry_names() -> None:
    assert NORMALIZERS.names() == ["harness", "lmms_eval", "lower", "mumc", "none", "simple", "vqa_v2"]
    with pytest.raises(ConfigError, match="Did you mean 'simple'"):
        NORMALIZERS.get("simpel")


@pytest.mark.parametrize("text, expected", [
    ("  Hello,   World!\n", "hello world"),
    ("T2-weighted", "t2weighted"),
    ("Don't", "dont"),
    ("Skull \tcartilage and medulla", "skull cartilage and medulla"),
    ("Yes.\nThere is.", "yes there is"),
    ("Ünïcödé ÉCHO", "ünïcödé écho"),
    ("肺，", "肺，"),  # only ASCII punctuation is deleted
    ("...", ""),
    ("", ""),
    ("3.5 cm", "35 cm"),
])
def test_simple(text: str, expected: str) -> None:
    assert normalize(text, "simple") == expected


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"),
    ("The two lesions, left-sided.", "2 lesions left sided"),  # ", " touches a space: deleted; "-" does not
    ("1,000 cells", "1000 cells"),  # a digit,digit comma: every mark deleted
    ("3.5 cm.", "3.5 cm"),  # periods followed by a digit stay
    ("dont know", "don't know"),
    ("ill", "ill"),  # not "i'll"
    ("none", "0"),
    ("An MRI", "mri"),
    ("x-ray", "x ray"),
    ("left - right", "left right"),
    ("(a) b", "b"),  # ")" touches a space: deleted; "(" does not: space; then "a" is an article
    ("Is it?\nYes", "is it yes"),
    ("", ""),
])
def test_vqa_v2(text: str, expected: str) -> None:
    assert normalize(text, "vqa_v2") == expected


@pytest.mark.parametrize("text, expected", [
    ("X-ray", "xray"),
    ("x ray film", "xray film"),
    ("T2 - weighted", "t2 weighted"),  # " - " -> "-", then vqa_v2 turns the lone "-" into a space
    ("Yes.", "yes"),
    ("3.5 cm", "35 cm"),  # mumc deletes every period first (a trap for decimals)
    ("Right side (lateral)!", "right side lateral"),
    ("don't", "don't"),  # apostrophe deleted, then restored by the contraction map
    ("The Left", "left"),
])
def test_mumc(text: str, expected: str) -> None:
    assert normalize(text, "mumc") == expected


@pytest.mark.parametrize("text, expected", [
    ("Yes (probably)", "yes"),
    ("  Nope ", "no"),
    ("TRUE", "yes"),
    ("false", "no"),
    ("yes.", "yes"),
    ("yeah right", "yeah right"),  # synonyms only as the whole string
    ("X-Ray", "xray"),
    ("chest x ray", "chest xray"),
    ("box ray", "box ray"),
    ("left, lung.", "left lung"),
    ("a (b (c) d) e", "a e"),
    ("(unclosed", "unclosed"),
    ("no evidence", "no evidence"),
])
def test_lmms_eval(text: str, expected: str) -> None:
    assert normalize(text, "lmms_eval") == expected


@pytest.mark.parametrize("name, text, expected", [
    ("none", "  A b ", "  A b "),
    ("lower", "  A b ", "a b"),
])
def test_none_and_lower(name: str, text: str, expected: str) -> None:
    assert normalize(text, name) == expected


@pytest.mark.parametrize("text, expected", [
    ("a (b) c", "a  c"),
    ("a (b (c) d", "a (b  d"),  # the unmatched "(" stays, the matched inner pair goes
    ("x) (y", "x) (y"),
    ("((a)(b))c", "c"),
])
def test_drop_parentheticals(text: str, expected: str) -> None:
    assert drop_parentheticals(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("yes", "yes"),
    ("Yes, there is", "yes"),
    ("YES!!", "yes"),
    ("no.", "no"),
    ("No, there is no fracture.", "no"),
    ("There is no evidence of pneumothorax", "no"),
    ("yes or no", None),  # hedge
    ("Yes. No.", None),
    ("nodule", None),
    ("not", None),
    ("abnormal", None),
    ("none", None),
    ("yesterday", None),
    ("yeah", None),
    ("nope", None),
    ("", None),
    ("是", None),
])
def test_yes_no_of(text: str, expected: str | None) -> None:
    assert yes_no_of(text) == expected


@pytest.mark.parametrize("text, name, expected", [
    ("Left, lung.", "simple", ["left", "lung"]),
    ("The lung", "vqa_v2", ["lung"]),
    ("", "simple", []),
])
def test_tokens(text: str, name: str, expected: list[str]) -> None:
    assert tokens(text, name) == expected


@pytest.mark.parametrize("text", [
    "(" * 1_000_000,
    "(a" * 500_000,
    "yes " * 250_000,
    "x-ray, 1,000. " * 70_000,
    "é" * 1_000_000,
])
@pytest.mark.timeout(120)  # a hang guard against quadratic normalisers, not a speed target
def test_megabyte_inputs_are_normalised(text: str) -> None:
    for name in NORMALIZERS.names():
        assert isinstance(normalize(text, name), str)
    assert yes_no_of(text) in ("yes", "no", None)
