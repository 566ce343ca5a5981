"""How to turn a raw Hugging Face model (no sentence-transformers config) into an embedding model.

Encoders: BGE checkpoints were trained with CLS pooling and an instruction prepended to queries;
CodeBERT was not trained for embeddings at all, and mean pooling is the usual start.

Decoders (LLM embedders: Qwen3-Embedding, gte-Qwen2): with causal attention only the last token
has seen the whole text, so they pool the last token, and the text ends with an end-of-text token
that the model was trained to summarise it into. Pooling takes the last *real* token whichever
side pads (sentence-transformers' ``lasttoken`` reads the attention mask; the pad token is often
the end-of-text token itself). Queries carry an instruction, ``Instruct: <task>\\nQuery:``
(Wang et al., "Improving Text Embeddings with Large Language Models", 2023), documents none.
The weights load in bf16 where the hardware has it: half the memory, and the dtype they ship in.

All presets are normalised so that a dot product is a cosine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import processors

from trainer import hardware
from trainer.errors import CodetuneError


@dataclass(frozen=True)
class Preset:
    """Pooling, prompts and tokenizer settings for one family of raw models."""

    pooling: str  # "cls", "mean" or "lasttoken"
    query_prompt: str = ""
    names: tuple[str, ...] = ()  # lower-case parts of a model name that select this preset
    decoder: bool = False  # a causal LM: end-of-text appended, left padding, bf16 weights where supported
    eos_token: str | None = None  # decoders: the token appended to every text; None: the tokenizer's eos_token


# The instruction families of decoder embedders take a task description: ours is code search.
CODE_TASK = "Given a code search query, retrieve the code that answers it"

PRESETS: dict[str, Preset] = {
    # BAAI/bge-*-en-v1.5 model card: CLS pooling; this instruction on short queries for retrieval.
    "bge": Preset(pooling="cls", query_prompt="Represent this sentence for searching relevant passages: ", names=("bge",)),
    # microsoft/codebert-base: a RoBERTa MLM; mean pooling is the common starting point.
    "codebert": Preset(pooling="mean", names=("codebert",)),
    # Any causal LM (Llama, Qwen, Mistral...): the E5-mistral instruction format, the tokenizer's own EOS.
    "decoder": Preset(pooling="lasttoken", query_prompt=f"Instruct: {CODE_TASK}\nQuery: ", decoder=True),
    # Qwen/Qwen3-Embedding-{0.6B,4B,8B} model card: "Instruct: {task}\nQuery:{query}", <|endoftext|> appended.
    "qwen3-embedding": Preset(
        pooling="lasttoken", query_prompt=f"Instruct: {CODE_TASK}\nQuery:", names=("qwen3-embedding",),
        decoder=True, eos_token="<|endoftext|>",
    ),
    # Alibaba-NLP/gte-Qwen2-{1.5B,7B}-instruct model card: "Instruct: {task}\nQuery: {query}", <|endoftext|> last.
    "gte-qwen2": Preset(
        pooling="lasttoken", query_prompt=f"Instruct: {CODE_TASK}\nQuery: ", names=("gte-qwen2",),
        decoder=True, eos_token="<|endoftext|>",
    ),
}


def preset_for_name(name: str) -> str | None:
    """The preset a model name implies (``BAAI/bge-base-en-v1.5`` -> ``bge``), or None."""
    lowered = name.lower().rsplit("/", 1)[-1]
    for key, preset in PRESETS.items():
        if any(part in lowered for part in preset.names):
            return key
    return None


def weight_dtype(preset: Preset) -> dict:
    """``model_kwargs`` that load a decoder's weights in bf16 where the hardware has bf16 units, else fp32.

    Encoders keep the checkpoint's dtype. Trained weights are made fp32 again before training
    (:func:`trainer.models.memory.prepare_for_training`), so only frozen ones stay bf16.
    """
    if not preset.decoder:
        return {}
    return {"torch_dtype": torch.bfloat16 if hardware.bf16_supported() else torch.float32}


def end_with_eos(tokenizer, preset: Preset) -> None:
    """Make ``tokenizer`` pad on the left and end every text with the preset's end-of-text token.

    A tokenizer that already ends texts with a special token (Qwen3-Embedding's current one does)
    is left as it is. The token goes into the fast tokenizer's post-processor, so truncation
    keeps room for it and a saved model appends it too.

    Raises:
        CodetuneError: when the tokenizer has no such token or is not a fast tokenizer.
    """
    tokenizer.padding_side = "left"  # the last position is always a real token, as causal models expect
    if tokenizer("a")["input_ids"][-1] in tokenizer.all_special_ids:
        return
    token = preset.eos_token or tokenizer.eos_token
    # Not convert_tokens_to_ids: Qwen's unknown token is <|endoftext|> itself.
    token_id = tokenizer.get_vocab().get(token) if token else None
    if token_id is None:
        raise CodetuneError(f"model.preset: the tokenizer has no end-of-text token {token!r} to append; pick another preset")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CodetuneError("model.preset: a decoder preset needs a fast tokenizer (tokenizer.json)")
    eos = processors.TemplateProcessing(
        single=f"$A:0 {token}:0", pair=f"$A:0 {token}:0 $B:1 {token}:1", special_tokens=[(token, token_id)]
    )
    old = backend.post_processor
    backend.post_processor = processors.Sequence([old, eos]) if old is not None else eos
