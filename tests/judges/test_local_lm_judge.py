"""The GRPO study's semantic-alignment judge (issue 21 item 8): Figure 1's template word for word, judged by
local causal LMs of the paper's reference classes (BioGPT, BioMistral = a Mistral) through the `hf_lm` judge
backend, on small random-weight models built offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from medharness.core.records import Answer, Sample
from medharness.judges.metrics import close_backends, judge_batch
from medharness.judges.specs import JudgeInput, get_spec

PAPER = Path(__file__).resolve().parents[3] / "shared" / "papers" / "grpo-medvqa-study.txt"
SAMPLE = Sample(task="t", id="s1", question="Which organ?", target="B", choices=["liver", "lung"])
REPLY = "<think>The lesion sits in the lung.</think><answer>B</answer>"
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def biogpt_tokenizer(folder: Path):  # type: ignore[no-untyped-def]
    """A `BioGptTokenizer` (Moses + BPE, as microsoft/biogpt) over a small vocabulary, built offline: whole
    words for the judge's words, single characters for the rest (no merges)."""
    import json

    from transformers import BioGptTokenizer

    words = ["<s>", "<pad>", "</s>", "<unk>", "Yes</w>", "No</w>", "Answer</w>", "the</w>", "lung</w>"]
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'.,:;()<>/-_?!\""
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*words, *(c + "</w>" for c in chars), *chars]))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("")
    return BioGptTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A BioGptForCausalLM with BioGPT's own tokenizer class, scripted to answer "Yes" whatever it reads
    (final norm weight 0, so its hidden state is the norm's bias; the "Yes" row of the tied output embedding
    points along it), and a random MistralForCausalLM (BioMistral's class) with the tiny Qwen tokenizer."""
    pytest.importorskip("sacremoses", reason="BioGptTokenizer needs sacremoses")
    from medharness.core.torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import BioGptConfig, BioGptForCausalLM, MistralConfig, MistralForCausalLM

    from medharness.checkpoints.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("judge-lms")
    torch.manual_seed(0)
    bio_tok = biogpt_tokenizer(out / "biogpt-vocab")
    biogpt = BioGptForCausalLM(BioGptConfig(vocab_size=len(bio_tok), max_position_embeddings=512,
                                            pad_token_id=bio_tok.pad_token_id, **SMALL))
    with torch.no_grad():
        norm = biogpt.biogpt.layer_norm
        norm.weight.zero_()
        norm.bias.copy_(torch.randn(32))
        biogpt.get_output_embeddings().weight[bio_tok.convert_tokens_to_ids("Yes</w>")] = 50 * norm.bias
    biogpt.save_pretrained(out / "biogpt")
    bio_tok.save_pretrained(out / "biogpt")
    tok = build_tokenizer()
    mistral = MistralForCausalLM(MistralConfig(vocab_size=len(tok), num_key_value_heads=1,
                                               max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                                               eos_token_id=tok.eos_token_id, **SMALL))
    mistral.save_pretrained(out / "biomistral")
    tok.save_pretrained(out / "biomistral")
    return {"biogpt": str(out / "biogpt"), "biomistral": str(out / "biomistral")}


@pytest.mark.skipif(not PAPER.is_file(), reason=f"{PAPER} is absent")
def test_the_prompt_is_figure_1_word_for_word() -> None:
    spec = get_spec("semantic_fig1_v1")
    assert spec.prediction_text(REPLY) == "The lesion sits in the lung."
    assert spec.prediction_text("no think") is None  # nothing to judge: no call
    (turn,) = spec.render(JudgeInput(question="Which organ?", gold="", prediction="STATEMENT"))
    text = turn.content[0].text or ""
    assert turn.role == "user" and text.endswith("Answer:")
    paper = _collapse(PAPER.read_text(encoding="utf-8"))
    before, after = text.split("STATEMENT")
    # Figure 1: "Given Statement: Reasoning Text (e.g., text between <think></think>)" is where the text goes
    assert _collapse(before) in paper and _collapse(after) in paper
    assert _collapse(before + "Reasoning Text (e.g., text between <think></think>)" + after) in paper


@pytest.mark.parametrize(("reply", "value"), [("Yes", 1.0), (" yes.", 1.0), ("YES, it is", 1.0), ("No", 0.0),
                                              ("\nno, because", 0.0), ("YesYesYes", 1.0), ("Nothing", None),
                                              ("Yesterday", None), ("Maybe", None), ("", None)])
def test_the_reply_begins_with_yes_or_no(reply: str, value: float | None) -> None:
    verdict = get_spec("semantic_fig1_v1").parse(reply)
    assert verdict.value == value and verdict.failed == (value is None)


def test_biogpt_and_biomistral_judge_through_the_panel(models: dict[str, str]) -> None:
    """Two hf_lm members (BioGptForCausalLM, MistralForCausalLM): each verdict is the parse of the model's own
    greedy continuation of the prompt, recomputed here with transformers; the reward is their mean."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medharness.judges.local_lm import LocalLMBackend

    spec = get_spec("semantic_fig1_v1")
    (turn,) = spec.render(JudgeInput(question="", gold="", prediction="The lesion sits in the lung."))
    by_hand = {}
    for name, folder in models.items():
        tok = AutoTokenizer.from_pretrained(folder)
        net = AutoModelForCausalLM.from_pretrained(folder).eval()
        enc = tok(turn.content[0].text, return_tensors="pt")
        with torch.no_grad():
            ids = net.generate(**enc, max_new_tokens=spec.max_new_tokens, do_sample=False,
                               pad_token_id=tok.pad_token_id)
        by_hand[name] = spec.parse(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    assert by_hand["biogpt"].value == 1.0  # the scripted model says Yes
    assert type(AutoTokenizer.from_pretrained(models["biogpt"])).__name__ == "BioGptTokenizer"
    judges = ",".join(f"semantic_fig1_v1:hf_lm:{folder}" for folder in models.values())
    items = [(Answer(value="B"), SAMPLE, REPLY), (Answer(value=None), SAMPLE, "no reasoning")]
    try:
        values = judge_batch(items, judges=judges, cache=False)
    finally:
        close_backends()
    scored = [v.value for v in by_hand.values() if v.value is not None]
    assert values == [pytest.approx(sum(scored) / len(scored)), None]  # no <think>: not judged, None
    with pytest.raises(Exception, match="does not take"):
        LocalLMBackend(models["biogpt"], concurrency=4)
