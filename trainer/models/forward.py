"""A differentiable forward pass that embeds text exactly as ``encode_query``/``encode_document`` do."""

from __future__ import annotations

from typing import Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Router

from trainer.models import is_asymmetric

Kind = Literal["query", "document"]


def tokenize(model: SentenceTransformer, texts: list[str], kind: Kind, device: torch.device) -> dict:
    """Tokenize with the model's prompt for ``kind`` (e.g. BGE's query instruction) on ``device``."""
    # Only a Router that is the input module routes tokenization by task.
    kwargs = {"task": kind} if isinstance(model[0], Router) else {}
    features = model.preprocess(texts, prompt=model.prompts.get(kind) or None, **kwargs)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}


def embed(model: SentenceTransformer, features: dict, kind: Kind) -> torch.Tensor:
    """(b, D) sentence embeddings of tokenized ``features``, with gradient."""
    kwargs = {"task": kind} if is_asymmetric(model) else {}
    return model(features, **kwargs)["sentence_embedding"]


class PairEncoder(torch.nn.Module):
    """Queries and documents in one ``forward``, so DDP sees one forward per backward.

    DDP's reducer expects that; two forward calls (queries, then documents) before one backward
    break it as soon as some parameters are unused, which a ``Router``'s other route always is.
    """

    def __init__(self, model: SentenceTransformer):
        super().__init__()
        self.model = model

    def forward(
        self, queries: dict | None, documents: dict | list[dict] | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns (b, D) query and (n, D) document embeddings; None where no input was given.

        ``documents`` may be a list of tokenized buckets (each padded to its own longest text);
        their embeddings are concatenated in list order.
        """
        q = embed(self.model, queries, "query") if queries is not None else None
        if documents is None:
            return q, None
        buckets = documents if isinstance(documents, list) else [documents]
        d = torch.cat([embed(self.model, f, "document") for f in buckets])
        return q, d


def count_tokens(features: dict) -> int:
    """Non-padding tokens in a tokenized batch (for tokens/s)."""
    mask = features.get("attention_mask")
    return int(mask.sum()) if mask is not None else 0
