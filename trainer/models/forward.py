"""A differentiable forward pass that embeds text exactly as ``encode_query``/``encode_document`` do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Router

from trainer.models import is_asymmetric
from trainer.models.memory import hf_models

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


def sdpa_configs(model: SentenceTransformer) -> list:
    """The configs of ``model``'s Hugging Face transformers that dispatch attention to SDPA.

    Models with their own attention code (MPNet) have no such dispatch and are left out; so are
    transformers with gradient checkpointing on, whose recomputation during backward runs outside
    any forward-time switch and must see the kernel the forward saw.
    """
    configs = []
    for hf in hf_models(model):
        # transformers 5 renamed it (the old name warns); 4.x only has is_gradient_checkpointing.
        new_name = hasattr(type(hf), "is_activation_checkpointing")
        checkpointing = hf.is_activation_checkpointing if new_name else getattr(hf, "is_gradient_checkpointing", False)
        config = getattr(hf, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa" and not checkpointing:
            configs.append(config)
    return configs


@contextmanager
def eager_attention(configs: list) -> Iterator[None]:
    """Within the block, these transformers compute attention as matmul + softmax instead of SDPA.

    transformers reads ``config._attn_implementation`` at every forward, so this switches the
    kernel of the forwards run inside the block only; both compute the same attention.
    """
    for config in configs:
        config._attn_implementation = "eager"
    try:
        yield
    finally:
        for config in configs:
            config._attn_implementation = "sdpa"


class PairEncoder(torch.nn.Module):
    """Queries and documents in one ``forward``, so DDP sees one forward per backward.

    DDP's reducer expects that; two forward calls (queries, then documents) before one backward
    break it as soon as some parameters are unused, which a ``Router``'s other route always is.

    ``eager_max_tokens > 0``: inputs padded to at most that many tokens use eager attention, longer
    ones SDPA. On CPU, SDPA's fused (flash) kernel saves the (b, heads, seq, seq) probabilities'
    memory but its backward is slow at short lengths: measured at batch 32 and 12 heads of 32 dims,
    fused forward + backward 69 ms at 128 tokens against 19 ms eager, 140 against 157 at 256. Eager
    below a length and fused above keeps most of the speed, and the long inputs, where those
    probabilities are largest, keep the fused kernel's memory.
    """

    def __init__(self, model: SentenceTransformer, eager_max_tokens: int = 0):
        super().__init__()
        self.model = model
        self.eager_max_tokens = eager_max_tokens
        self._sdpa = sdpa_configs(model) if eager_max_tokens > 0 else []

    def _embed(self, features: dict, kind: Kind) -> torch.Tensor:
        ids = features.get("input_ids")
        short = self._sdpa and ids is not None and ids.shape[-1] <= self.eager_max_tokens
        with eager_attention(self._sdpa) if short else nullcontext():
            return embed(self.model, features, kind)

    def forward(
        self, queries: dict | None, documents: dict | list[dict] | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns (b, D) query and (n, D) document embeddings; None where no input was given.

        ``documents`` may be a list of tokenized buckets (each padded to its own longest text);
        their embeddings are concatenated in list order.
        """
        q = self._embed(queries, "query") if queries is not None else None
        if documents is None:
            return q, None
        buckets = documents if isinstance(documents, list) else [documents]
        d = torch.cat([self._embed(f, "document") for f in buckets])
        return q, d


def count_tokens(features: dict) -> int:
    """Non-padding tokens in a tokenized batch (for tokens/s)."""
    mask = features.get("attention_mask")
    return int(mask.sum()) if mask is not None else 0
