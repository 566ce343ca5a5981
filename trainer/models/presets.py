"""How to turn a raw Hugging Face encoder (no sentence-transformers config) into an embedding model.

BGE checkpoints were trained with CLS pooling and an instruction prepended to queries; CodeBERT
was not trained for embeddings at all, and mean pooling is the usual start. Both are normalised so
that a dot product is a cosine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Pooling and prompts for one family of raw encoders."""

    pooling: str  # "cls" or "mean"
    query_prompt: str = ""


PRESETS: dict[str, Preset] = {
    # BAAI/bge-*-en-v1.5 model card: CLS pooling; this instruction on short queries for retrieval.
    "bge": Preset(pooling="cls", query_prompt="Represent this sentence for searching relevant passages: "),
    # microsoft/codebert-base: a RoBERTa MLM; mean pooling is the common starting point.
    "codebert": Preset(pooling="mean"),
}


def preset_for_name(name: str) -> str | None:
    """The preset a model name implies (``BAAI/bge-base-en-v1.5`` -> ``bge``), or None."""
    lowered = name.lower()
    for key in PRESETS:
        if key in lowered.rsplit("/", 1)[-1]:
            return key
    return None
