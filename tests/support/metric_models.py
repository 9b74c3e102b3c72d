"""Small random-weight models of the classes the model-backed metrics default to, built offline (a helper, not
a test): a BERT for BERTScore, a RobertaForSequenceClassification cross-encoder (as
cross-encoder/stsb-roberta-base) and a BioGptForCausalLM (as microsoft/biogpt), each saved with a tokenizer
built in memory."""

from __future__ import annotations

from pathlib import Path

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "left", "right", "lung", "mass", "liver",
         "normal", "yes", "no", "small", "large", "lesion", "in", "is", "there"]
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def build_metric_models(out: Path) -> dict[str, str]:
    """{"bert", "cross", "causal"} -> model folders under `out`."""
    from medharness.core.torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizerFast,
        BioGptConfig,
        BioGptForCausalLM,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    from medharness.checkpoints.tiny import build_tokenizer

    torch.manual_seed(0)
    bert = out / "bert"
    BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}, model_max_length=64).save_pretrained(bert)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(bert)
    tok = build_tokenizer()
    cross = out / "cross-encoder"
    RobertaForSequenceClassification(RobertaConfig(vocab_size=len(tok), num_labels=1,
                                                   max_position_embeddings=514,
                                                   pad_token_id=1, **SMALL)).save_pretrained(cross)
    tok.save_pretrained(cross)
    causal = out / "biogpt"
    BioGptForCausalLM(BioGptConfig(vocab_size=len(tok), max_position_embeddings=1100,
                                   pad_token_id=tok.pad_token_id, **SMALL)).save_pretrained(causal)
    tok.save_pretrained(causal)
    return {"bert": str(bert), "cross": str(cross), "causal": str(causal)}
