"""Answer normalisers: named `str -> str` functions, as specified in docs/conventions.md.

Every normaliser is total (never raises) and linear in the text length. Names are stable: task
files and conventions refer to them, and tests pin their exact output.

- `none`: identity.  `lower`: lower-case and strip.
- `simple`: lower, strip, delete every ASCII punctuation character, collapse whitespace.
- `harness`: the harness convention's reading: Unicode NFKC, invisible (format) characters deleted, markup
  (`<answer>`, `</think>`, `<|im_end|>`, `\\boxed`) turned into spaces, every Unicode punctuation mark
  deleted, then `simple`. Peer conventions keep their own normalisers.
- `vqa_v2`: the VQA-v2 evaluation's processPunctuation + processDigitArticle.
- `mumc`: MUMC/MEVF pre-clean (delete , . ' ! ? " ( ) * # : ; ~, x-ray -> xray, " - " -> "-"), then `vqa_v2`.
- `lmms_eval`: lmms-eval's slake cleaning (parentheticals dropped, punctuation -> space, yes/no synonyms).
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Callable, Sequence

from medharness.core.registry import Registry

NormalizerFn = Callable[[str], str]
NORMALIZERS: Registry[NormalizerFn] = Registry("normalizer")


NormalizerName = NORMALIZERS.name_type()
"""A metric or parser argument that names a normaliser: unknown names are refused when the task is read."""


def normalizer(name: str) -> Callable[[NormalizerFn], NormalizerFn]:
    return NORMALIZERS.register(name)


def normalize(text: str, name: str = "simple") -> str:
    """Apply the named normaliser (`str(text)` first, so ints and None never raise)."""
    return _normalize_cached("" if text is None else str(text), name)


@functools.lru_cache(maxsize=4096)
def _normalize_cached(text: str, name: str) -> str:
    """Normalisers are pure: one row's metrics normalise the same gold and answer several times each."""
    return NORMALIZERS.get(name)(text)


def tokens(text: str, normalizer: str = "simple") -> list[str]:
    """Whitespace tokens of `text` after the named normaliser."""
    return normalize(text, normalizer).split()


# Words that negate the answer token after them (`harness` tokens: "isn't" is "isnt"); "no" is an answer.
NEGATIONS = frozenset({"not", "never", "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "didnt",
                       "cannot", "cant", "wont", "nor"})
ARTICLES = frozenset({"a", "an", "the"})


def negated(words: Sequence[str], index: int) -> bool:
    """Whether the token at `index` is negated: a negation word just before it, an article between allowed
    ("not yes", "not a yes", "never 2")."""
    before = index - 1
    if before >= 0 and words[before] in ARTICLES:
        before -= 1
    return before >= 0 and words[before] in NEGATIONS


@functools.lru_cache(maxsize=8192)
def yes_no_of(text: str) -> str | None:
    """Strict yes/no reading of a (short) answer: "yes", "no" or None.

    Rule: normalise with `harness` (so punctuation and markup go and "Yes," or "ｙｅｓ。" becomes "yes"),
    split on whitespace, and look at whole tokens only:
    - token `yes` present and token `no` absent -> "yes"  ("Yes, there is." -> yes)
    - token `no` present and token `yes` absent -> "no"   ("No." / "no evidence" -> no)
    - both (a hedge such as "yes or no") or neither -> None;
    - a negated yes or no ("not yes", "never no", "isn't a yes": `negated`) -> None, a hedge, never the word.
    Substrings never count: "nodule", "not", "none", "abnormal", "yesterday" are not yes/no, and
    synonyms ("yeah", "nope", "true", "negative") are not accepted either.
    """
    words = tokens(text, "harness")
    if any(negated(words, i) for i, w in enumerate(words) if w in ("yes", "no")):
        return None
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "yes"
    if has_no and not has_yes:
        return "no"
    return None


# --- none / lower / simple -------------------------------------------------------------------

_DELETE_ASCII_PUNCT = str.maketrans("", "", string.punctuation)


@normalizer("none")
def _none(text: str) -> str:
    """Identity."""
    return text


@normalizer("lower")
def _lower(text: str) -> str:
    """Lower-case and strip."""
    return text.lower().strip()


@normalizer("simple")
@functools.lru_cache(maxsize=8192)  # pure, and called on the same gold and answer by several metrics of a row
def simple(text: str) -> str:
    """Lower, delete every ASCII punctuation character, collapse all whitespace (incl. newlines)."""
    return " ".join(text.lower().translate(_DELETE_ASCII_PUNCT).split())


# --- harness: Unicode and markup, then simple ---------------------------------------------------

# Markup is never part of a word: `<answer>no</answer> yes` must read as "no yes", not "answernoanswer yes".
# Matched: special tokens `<|...|>`, XML/HTML-like tags (`<answer>`, `</think>`, `<br/>`, `<b class=x>`) and
# LaTeX commands (`\\boxed`, `\\text`). Every quantifier is bounded, so the scan stays linear.
_MARKUP = re.compile(r"<\|[^<>|\n]{0,64}\|>|</?[A-Za-z][\w:-]{0,31}(?:\s[^<>\n]{0,256})?/?>|\\[A-Za-z]{1,32}")
_ASCII_PUNCT = frozenset(string.punctuation)


def strip_markup(text: str) -> str:
    """Every markup tag or LaTeX command -> one space (their words then stand apart)."""
    return _MARKUP.sub(" ", text) if ("<" in text or "\\" in text) else text


def _drops(ch: str) -> bool:
    """Punctuation (Unicode P*, e.g. 。、！，「」), ASCII punctuation and invisible format characters (Cf:
    zero-width space and joiners, BOM, soft hyphen, direction marks)."""
    if ch in _ASCII_PUNCT:
        return True
    category = unicodedata.category(ch)
    return category[0] == "P" or category == "Cf"


def clean_text(text: str) -> str:
    """Raw model text as the harness reads it, case and punctuation kept: NFKC (full-width ｙｅｓ -> yes,
    ！ -> !), invisible format characters (Cf) deleted, markup -> spaces."""
    if not text.isascii():
        text = "".join(ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) != "Cf")
    return strip_markup(text)


@normalizer("harness")
@functools.lru_cache(maxsize=8192)  # pure, and called on the same gold and answer by several metrics of a row
def harness(text: str) -> str:
    """`clean_text`, then Unicode punctuation deleted (ASCII and P*: 。、！，「」), lower-case, whitespace
    collapsed. On ASCII text it equals `simple` once markup is spaced out."""
    text = clean_text(text)
    if text.isascii():
        return simple(text)
    return " ".join("".join(ch for ch in text.lower() if not _drops(ch)).split())


# --- vqa_v2 ----------------------------------------------------------------------------------

_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
              ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official regex is "(?!<=\d)(\.)(?!\d)", whose look-behind is malformed: in effect it drops
# every period that is not followed by a digit. We reproduce that effect.
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
# Contractions written without apostrophes are restored ("dont" -> "don't"). Forms that are also
# plain English words (ill, id, its, hell, shell, well, wed, shed, were, lets, cant is kept) are
# left out, as the VQA map leaves out (or makes unreachable) most of them.
_CONTRACTED = ["ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't",
               "don't", "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd",
               "how'll", "how's", "isn't", "it'd", "it'd've", "it'll", "ma'am", "mightn't", "might've",
               "mustn't", "must've", "needn't", "not've", "o'clock", "oughtn't", "shan't", "she'd've",
               "she's", "should've", "shouldn't", "shouldn't've", "somebody'd", "somebody'll", "somebody's",
               "someone'd", "someone'll", "someone's", "something'd", "something'll", "that's", "there'd",
               "there're", "there's", "they'd", "they'll", "they're", "they've", "'twas", "wasn't", "we've",
               "weren't", "what'll", "what're", "what's", "what've", "when's", "where'd", "where's",
               "where've", "who'd", "who'll", "who's", "who've", "why'll", "why're", "why's", "won't",
               "would've", "wouldn't", "wouldn't've", "y'all", "you'd", "you'll", "you're", "you've"]
CONTRACTIONS: dict[str, str] = {c.replace("'", ""): c for c in _CONTRACTED}


def process_punctuation(text: str) -> str:
    """VQA-v2 processPunctuation: per mark, delete it if it touches a space anywhere in the text (or
    the text has a digit,digit comma), else replace it with a space; then drop periods not followed
    by a digit. The conditions are tested on the input text as a whole, as the original does."""
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _VQA_PUNCT:
        if p not in out:
            continue
        if has_digit_comma or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def process_digit_article(text: str) -> str:
    """VQA-v2 processDigitArticle: number words -> digits, drop a/an/the, restore contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


@normalizer("vqa_v2")
def vqa_v2(text: str) -> str:
    """Lower-case, tabs/newlines -> spaces, processPunctuation, then processDigitArticle."""
    text = text.lower().replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


# --- mumc ------------------------------------------------------------------------------------

_MUMC_DELETE = str.maketrans("", "", ",.'!?\"()*#:;~")
_X_RAY = re.compile(r"\bx[ -]ray")


@normalizer("mumc")
def mumc(text: str) -> str:
    """MUMC/MEVF: lower, delete , . ' ! ? " ( ) * # : ; ~, x ray/x-ray -> xray, " - " -> "-", then vqa_v2."""
    text = text.lower().translate(_MUMC_DELETE)
    text = _X_RAY.sub("xray", text).replace(" - ", "-")
    return vqa_v2(text)


# --- lmms_eval -------------------------------------------------------------------------------

_SPACE_ASCII_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_X_RAY_WORDS = re.compile(r"\bx ray\b")
_YES = frozenset({"yes", "yeah", "yep", "true"})
_NO = frozenset({"no", "nope", "false"})


def drop_parentheticals(text: str) -> str:
    """Delete every balanced `( ... )` span (nested ones included), in one linear pass.

    An unmatched `(` or `)` is kept as it is."""
    opens: list[int] = []
    spans: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        if ch == "(":
            opens.append(i)
        elif ch == ")" and opens:
            spans.append((opens.pop(), i + 1))
    if not spans:
        return text
    keep, pos = [], 0
    for start, end in _outermost(spans):
        keep.append(text[pos:start])
        pos = end
    keep.append(text[pos:])
    return "".join(keep)


def _outermost(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Keep only spans not inside another span."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
        if out and start < out[-1][1]:
            continue
        out.append((start, end))
    return out


@normalizer("lmms_eval")
def lmms_eval(text: str) -> str:
    """lmms-eval slake: strip, lower, drop ( ... ), punctuation -> space, collapse, x ray -> xray,
    whole-string synonyms {yes, yeah, yep, true} -> yes and {no, nope, false} -> no."""
    text = drop_parentheticals(text.strip().lower())
    text = " ".join(text.translate(_SPACE_ASCII_PUNCT).split())
    text = _X_RAY_WORDS.sub("xray", text)
    if text in _YES:
        return "yes"
    if text in _NO:
        return "no"
    return text
