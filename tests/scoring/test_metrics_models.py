"""Model-backed metrics on small random-weight models of the same classes as the defaults, built offline:
BERTScore (a BERT), the cross-encoder (RobertaForSequenceClassification, as cross-encoder/stsb-roberta-base)
and perplexity (BioGptForCausalLM, as microsoft/biogpt). Each value is recomputed here by hand from the
model's own hidden states or logits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from medharness.core.torchvision_shim import ensure_torchvision_importable

ensure_torchvision_importable()

import torch
from metric_models import build_metric_models  # tests/support
from transformers import BertModel, BertTokenizerFast, BioGptForCausalLM, RobertaForSequenceClassification

from medharness.core.records import Answer, Sample
from medharness.scoring.metrics import METRICS
from medharness.scoring.metrics.models import bertscore_f1, cross_encoder_score, perplexity

OPEN = Sample(task="t", id="o1", question="Where is the mass?", target="left lung",
              meta={"answer_type": "OPEN"})
CLOSED = Sample(task="t", id="c1", question="Is there a mass?", target="yes", meta={"answer_type": "CLOSED"})
MCQ = Sample(task="t", id="m1", question="Which organ?", target="B", choices=["liver", "lung"],
             meta={"reasoning": "the lesion sits in the lung"})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_metric_models(tmp_path_factory.mktemp("metric-models"))


def metric(name: str, sample: Sample, text: str, value: str | None = None, **args: object) -> float | None:
    fn = METRICS.get(name).fn
    assert fn is not None
    return fn(Answer(value=value), sample, text, **args)


def by_hand_bertscore(candidate: str, reference: str, folder: str, layers: int) -> float:
    """Greedy cosine matching of layer-`layers` token embeddings (BERTScore's F1): every token, [CLS] and
    [SEP] included, may be matched, but only the words are averaged (bert-score gives [CLS]/[SEP] weight
    0)."""
    tokenizer, model = BertTokenizerFast.from_pretrained(folder), BertModel.from_pretrained(folder).eval()

    def embed(text: str) -> torch.Tensor:
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            states = model(**enc, output_hidden_states=True).hidden_states[layers][0]
        return states / states.norm(dim=-1, keepdim=True)

    sim = embed(candidate) @ embed(reference).T
    precision = sim.max(dim=1).values[1:-1].mean().item()
    recall = sim.max(dim=0).values[1:-1].mean().item()
    return 2 * precision * recall / (precision + recall)


def test_bertscore_f1_by_hand(models: dict[str, str]) -> None:
    got = bertscore_f1("mass in the left lung", "left lung", models["bert"], 2)
    assert got == pytest.approx(by_hand_bertscore("mass in the left lung", "left lung", models["bert"], 2),
                                abs=1e-5)
    assert 0 < got < 1
    assert bertscore_f1("left lung", "left lung", models["bert"], 2) == pytest.approx(1.0, abs=1e-5)
    layer3 = bertscore_f1("mass in the left lung", "left lung", models["bert"], 3)
    assert layer3 == pytest.approx(by_hand_bertscore("mass in the left lung", "left lung", models["bert"], 3),
                                   abs=1e-5)
    assert layer3 != pytest.approx(got)  # num_layers is honoured


def test_rarl_accuracy_binary_closed_bertscore_open(models: dict[str, str]) -> None:
    args = {"model": models["bert"], "num_layers": 2}
    assert metric("rarl_accuracy", CLOSED, "", "yes", **args) == 1.0
    assert metric("rarl_accuracy", CLOSED, "", "no", **args) == 0.0
    assert metric("rarl_accuracy", CLOSED, "", None, **args) == 0.0
    open_value = metric("rarl_accuracy", OPEN, "", "the left lung", **args)
    assert open_value == pytest.approx(by_hand_bertscore("the left lung", "left lung", models["bert"], 2),
                                       abs=1e-5)
    assert metric("rarl_accuracy", OPEN, "", None, **args) == 0.0  # unparsed: zero credit


def test_cross_encoder_similarity_by_hand(models: dict[str, str]) -> None:
    from transformers import AutoTokenizer

    think = "<think>a small lesion in the lung</think><answer>B</answer>"
    tokenizer = AutoTokenizer.from_pretrained(models["cross"])
    model = RobertaForSequenceClassification.from_pretrained(models["cross"]).eval()
    with torch.no_grad():
        logit = model(**tokenizer("a small lesion in the lung", "B. lung",
                                  return_tensors="pt")).logits[0, 0].item()
    expected = 1 / (1 + math.exp(-logit))
    got = metric("reasoning_similarity", MCQ, think, "B", model=models["cross"])
    assert got == pytest.approx(expected, abs=1e-6)  # reference = the gold option written "B. lung"
    assert (cross_encoder_score("a small lesion in the lung", "B. lung", models["cross"])
            == pytest.approx(expected))
    to_reasoning = metric("reasoning_similarity", MCQ, think, "B", model=models["cross"],
                          reference="reasoning")
    assert to_reasoning == pytest.approx(cross_encoder_score("a small lesion in the lung",
                                                             "the lesion sits in the lung", models["cross"]))
    assert metric("reasoning_similarity", CLOSED, think, "yes", model=models["cross"],
                  reference="reasoning") is None
    assert metric("reasoning_similarity", MCQ, "B", "B", model=models["cross"]) == 0.0  # no reasoning at all


def test_long_reasoning_is_truncated_to_the_models_positions(models: dict[str, str]) -> None:
    long = "<think>" + "the lesion is in the left lung " * 400 + "</think><answer>B</answer>"
    similarity = metric("reasoning_similarity", MCQ, long, "B", model=models["cross"])
    assert similarity is not None and 0.0 < similarity < 1.0
    ppl = metric("reasoning_perplexity", MCQ, long, "B", model=models["causal"])
    assert ppl is not None and ppl > 1.0


def test_perplexity_is_exp_mean_token_nll(models: dict[str, str]) -> None:
    from transformers import AutoTokenizer

    text = "the lesion is in the left lung"
    tokenizer = AutoTokenizer.from_pretrained(models["causal"])
    model = BioGptForCausalLM.from_pretrained(models["causal"]).eval()
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    nll = []
    for pos in range(len(ids) - 1):  # token pos + 1 predicted from tokens 0..pos
        row = logits[pos].tolist()
        log_z = math.log(sum(math.exp(x) for x in row))
        nll.append(log_z - row[ids[pos + 1]])
    expected = math.exp(sum(nll) / len(nll))
    assert perplexity(text, models["causal"]) == pytest.approx(expected, rel=1e-4)
    got = metric("reasoning_perplexity", MCQ, f"<think>{text}</think><answer>B</answer>", "B",
                 model=models["causal"])
    assert got == pytest.approx(expected, rel=1e-4)
    assert metric("reasoning_perplexity", MCQ, "B", "B", model=models["causal"]) is None  # no reasoning
    assert METRICS.get("reasoning_perplexity").higher_is_better is False


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    from medharness.core.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be loaded"):
        metric("reasoning_perplexity", MCQ, "<think>x y z</think>", "B", model=str(tmp_path / "nowhere"))
