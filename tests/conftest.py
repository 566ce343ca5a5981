"""Tiny, randomly initialised BERT and RoBERTa encoders and a Qwen3 decoder, built in-process: no hub, seconds to make."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _training_text() -> list[str]:
    """Code and prose to fit the tiny tokenizers' vocabularies on."""
    import json

    lines = []
    with (FIXTURES / "beir_code" / "corpus.jsonl").open() as f:
        lines += [json.loads(line)["text"] for line in f]
    with (FIXTURES / "beir_code" / "queries.jsonl").open() as f:
        lines += [json.loads(line)["text"] for line in f]
    return lines


def make_tiny_bert(folder: Path, dropout: float = 0.0) -> Path:
    """A raw 2-layer BERT folder (config, weights, WordPiece tokenizer), as a hub checkpoint looks."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_training_text(), trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=128)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(), max_position_embeddings=130, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        initializer_range=0.2,  # at BERT's 0.02 a 2-layer CLS embedding barely depends on the input
        **TINY,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def make_tiny_roberta(folder: Path, dropout: float = 0.0) -> Path:
    """A raw 2-layer RoBERTa folder with a byte-level BPE tokenizer, as CodeBERT is laid out."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _training_text(), vocab_size=800, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", mask_token="<mask>", model_max_length=128,
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=bpe.get_vocab_size(), max_position_embeddings=132, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **TINY,
    )
    RobertaModel(config).save_pretrained(folder)
    return folder


def make_tiny_qwen3(folder: Path, dropout: float = 0.0) -> Path:
    """A raw 2-layer Qwen3 decoder folder with a byte-level BPE tokenizer that adds no special tokens.

    As Qwen's own tokenizers: ``<|endoftext|>`` pads, ``<|im_end|>`` is the chat EOS, and nothing
    is appended to a text, so the decoder presets must append the end-of-text token themselves.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_training_text(), vocab_size=800, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=128,
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=128,
        attention_dropout=dropout, initializer_range=0.2, pad_token_id=0, eos_token_id=2,
    )
    Qwen3Model(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Path to a raw tiny BERT; load with ``load_model(path, preset="bge")`` (CLS pooling)."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    """Path to a raw tiny RoBERTa; load with ``load_model(path, preset="codebert")`` (mean pooling)."""
    return make_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def beir_code() -> Path:
    """A small real code-retrieval set: 128 docstring queries over 327 standard-library functions."""
    return FIXTURES / "beir_code"


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    """Path to a raw tiny Qwen3 decoder; load with ``load_model(path, preset="decoder")`` (last-token pooling)."""
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))
