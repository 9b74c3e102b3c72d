"""Named scoring conventions: the harness default and the peers' rules, to re-score any run.

A convention = a parser chain (None: keep the task's own) + metric specs (as in `resolve_metrics`).
The rules are documented in docs/conventions.md; the metrics live in `medharness.scoring.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import medharness.scoring.metrics  # noqa: F401  (registers the metrics the conventions name)
from medharness.core.errors import ConfigError
from medharness.core.registry import Registry


@dataclass(frozen=True)
class Convention:
    name: str
    description: str  # one paragraph: whose, what exactly
    parser: list | None  # parser chain steps; None = use the task's own parser
    metrics: list  # metric specs as in resolve_metrics
    reference: str = ""  # where the rule comes from
    version: int = 1  # raised whenever a rule changes what a score means (docs/conventions.md, "Versions")

    @property
    def qualified(self) -> str:
        """The name runs record: `name@version` from version 2 on; a bare name is version 1."""
        return self.name if self.version == 1 else f"{self.name}@{self.version}"


CONVENTIONS: Registry[Convention] = Registry("convention")


def split_version(ref: str) -> tuple[str, int]:
    """`harness@2` -> ("harness", 2); a bare name -> version 1 (what runs recorded before versions)."""
    name, sep, version = ref.partition("@")
    if not sep:
        return name, 1
    if not version.isdigit() or int(version) < 1:
        raise ConfigError(f"convention '{ref}': the version after @ is a whole number >= 1")
    return name, int(version)


def resolve_convention(ref: str) -> Convention:
    """The convention `ref` names (`harness`, or `harness@2` with the version checked): this medharness holds
    one version of each; an older one is refused by name, never scored with newer rules."""
    name, version = split_version(ref)
    convention = CONVENTIONS.get(name)
    if "@" in ref and version != convention.version:
        raise ConfigError(f"convention {ref}: this medharness implements {convention.qualified}; "
                          f"{name}@{version} is another set of rules (docs/conventions.md, 'Versions')")
    return convention


def _add(convention: Convention) -> None:
    CONVENTIONS.register(convention.name, convention)


_add(Convention(
    name="harness",
    description=(
        "medharness default. The task's own parser extracts the final answer; a hedge (yes and no together, "
        "two different <answer> blocks or boxes, a later bare yes/no line that disagrees) is unparsed. A "
        "yes/no gold is scored by a strict whole-token yes/no parse of the answer ('no' inside "
        "'nodule'/'not' does not count); every other gold by exact match after the `harness` normaliser "
        "(NFKC, invisible characters and Unicode punctuation deleted, markup tags as spaces, then `simple`). "
        "Token recall and F1 (harness, multiset) are reported beside it. Unparsed answers score 0 and are "
        "counted."
    ),
    parser=None,
    metrics=["vqa_accuracy", "token_recall", "token_f1"],
    reference="docs/conventions.md, 'The harness default'",
    version=2,  # 2: negated answers and markup debris unparsed, JSON answers read (version 1: runs before)
))

_add(Convention(
    name="mumc",
    description=(
        "MUMC / MEVF family on VQA-RAD: the raw output and the gold are both cleaned with the `mumc` "
        "normaliser (punctuation deleted, x-ray -> xray, then VQA-v2 punctuation/digit/article rules) and "
        "compared for equality, for CLOSED and OPEN alike. Published as 100 x mean, split by answer_type and "
        "question_type. No Unicode normalisation: full-width letters, zero-width characters, CJK "
        "punctuation, tag text and any second answer make the whole string differ (wrong, never credited)."
    ),
    parser=["raw"],
    metrics=[{"name": "exact_match", "args": {"normalizer": "mumc"}, "as": "accuracy"}],
    reference="MUMC/MEVF VQA-RAD evaluation code; docs/conventions.md",
))

_add(Convention(
    name="lmms_eval",
    description=(
        "lmms-eval `slake` task: raw output and gold cleaned with the `lmms_eval` normaliser (parentheticals "
        "dropped, punctuation -> spaces, x ray -> xray, yeah/yep/true -> yes, nope/false -> no as whole "
        "strings) and compared for equality. ASCII only: Unicode is not normalised, so full-width letters, "
        "zero-width characters and CJK punctuation make the answer wrong; tag text stays as words; a hedge "
        "is wrong."
    ),
    parser=["raw"],
    metrics=[{"name": "exact_match", "args": {"normalizer": "lmms_eval"}}],
    reference="lmms-eval slake task utils; docs/conventions.md",
))

_add(Convention(
    name="yesno_strict",
    description=(
        "Common in SLAKE studies. CLOSED (sample.meta answer_type): simple-normalise, read yes/no as token "
        "'yes', else token 'no', else the text starting with yes/no; correct iff the gold reads as yes/no "
        "and the prediction reads the same, so non-yes/no CLOSED golds are always wrong. OPEN: simple exact "
        "match. Traps kept: 'yes or no' reads as yes, 'nodule' reads as no; ASCII punctuation is deleted, so "
        "tags glue into words ('<answer>no</answer> yes' reads as yes); no Unicode normalisation (full-width "
        "'ｙｅｓ' is unread, a trailing zero-width character still reads through the starts-with rule)."
    ),
    parser=["raw"],
    metrics=["yesno_strict_accuracy"],
    reference="docs/conventions.md, 'Peer conventions'",
))

_add(Convention(
    name="llava_med",
    description=(
        "LLaVA-Med v1.0 / PathVQA scripts. Both texts are lower-cased and VQA-v2 normalised. CLOSED: hit iff "
        "the prediction contains 'yes' or 'no' as a substring AND the gold is a substring of it (the fixed "
        "rule: misses stay in the denominator), so 'not' and 'nodule' count as containing 'no'. OPEN: recall "
        "(the paper's 'Open' column), precision and F1 over word counts, 'exact match' = distinct gold words "
        "in pred / pred words, open_hit = gold substring of pred. Closed metrics are None on OPEN samples "
        "and open metrics None on CLOSED ones. Substring tests credit hedges ('yes\\nno' is a hit for either "
        "gold); no Unicode normalisation."
    ),
    parser=["raw"],
    metrics=[
        {"name": "llava_med_closed", "as": "closed"},
        {"name": "llava_med_recall", "as": "recall"},
        {"name": "llava_med_precision", "as": "precision"},
        {"name": "llava_med_f1", "as": "f1"},
        {"name": "llava_med_exact_match", "as": "exact_match"},
        {"name": "llava_med_open_hit", "as": "open_hit"},
    ],
    reference="microsoft/LLaVA-Med llava/eval/run_eval.py and eval_metrics/evaluate_metrics.py",
))

_add(Convention(
    name="set_token_f1",
    description=(
        "Several GRPO-on-SLAKE studies: the answer is the content of the last <answer>...</answer>, else the "
        "text after the last </think>, else the whole output; answer and gold are lower-cased with "
        "punctuation deleted, and scored by F1 over token SETS (repeats ignored), on every sample. Several "
        "<answer> blocks: the last counts (answer_tag with several: last); hedges earn partial credit; no "
        "Unicode normalisation."
    ),
    parser=[{"first_of": {"parsers": [{"answer_tag": {"several": "last"}}, "after_think", "raw"]}}],
    metrics=["set_token_f1"],
    reference="docs/conventions.md, 'Peer conventions'",
))
