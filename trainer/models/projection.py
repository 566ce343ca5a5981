"""A query-only linear adapter over a frozen encoder (Chroma's "embedding adapters" baseline).

Only queries are mapped, so an existing document index stays valid. The trained head is exported
inside a standard sentence-transformers model whose ``Router`` sends queries through the head and
documents around it; ``encode_query``/``encode_document`` then need no special case anywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize, Router
from sentence_transformers.sentence_transformer.modules import Dense

from trainer.errors import CodetuneError
from trainer.sampler import plan_batches


class QueryHead(torch.nn.Module):
    """``q -> W q + b`` with ``W`` starting at the identity, so training starts from the base model.

    Args:
        dim: embedding dimension D.
        rank: 0 for a full D x D matrix; r > 0 for ``W = I + U V^T`` with U, V of shape (D, r),
            fewer parameters and a gentler change when pairs are few.
    """

    def __init__(self, dim: int, rank: int = 0):
        super().__init__()
        self.dim, self.rank = dim, rank
        self.bias = torch.nn.Parameter(torch.zeros(dim))
        if rank > 0:
            self.u = torch.nn.Parameter(torch.zeros(dim, rank))  # zero: W == I at start
            self.v = torch.nn.Parameter(torch.randn(dim, rank) / rank**0.5)
        else:
            self.weight = torch.nn.Parameter(torch.eye(dim))

    def matrix(self) -> torch.Tensor:
        """(D, D) the linear map W."""
        if self.rank > 0:
            return torch.eye(self.dim, device=self.u.device) + self.u @ self.v.T
        return self.weight

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D), not normalised."""
        return queries @ self.matrix().T + self.bias

    def to_dense(self) -> Dense:
        """The head as a sentence-transformers ``Dense`` module (always full rank, loads anywhere)."""
        dense = Dense(self.dim, self.dim, bias=True, activation_function=torch.nn.Identity())
        with torch.no_grad():
            dense.linear.weight.copy_(self.matrix().detach().cpu())
            dense.linear.bias.copy_(self.bias.detach().cpu())
        return dense


def with_query_head(base: SentenceTransformer, head: QueryHead) -> SentenceTransformer:
    """A model whose query route applies ``head`` after the base encoder and whose document route does not.

    The base must end in a ``Normalize`` module (as all-MiniLM-L6-v2 and the presets do): the
    head is trained on the normalised embeddings the cache holds.
    """
    modules = list(base.children())
    if not isinstance(modules[-1], Normalize):
        raise CodetuneError("projection head: the base model must end with a Normalize module")
    # The head sees normalised embeddings, as in training; the document route's Normalize is a no-op
    # that keeps both routes' outputs unit-length by construction.
    router = Router.for_query_document(query_modules=[head.to_dense(), Normalize()], document_modules=[Normalize()])
    return SentenceTransformer(modules=[*modules, router], prompts=dict(base.prompts), device=str(base.device))


def fit_query_head(
    head: QueryHead,
    queries: torch.Tensor,
    positives: torch.Tensor,
    keys: np.ndarray,
    loss_fn,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Train ``head`` with in-batch InfoNCE on cached embeddings; the encoder is never run.

    Args:
        queries: (N, D) cached query embeddings. positives: (N, D) their documents' embeddings.
        keys: (N, K) int64: per row, text hashes (see :func:`trainer.sampler.text_keys`), so that no
            batch holds the same text twice.
        loss_fn: a :class:`~trainer.losses.MatryoshkaInfoNCE` (``gather=False``).

    Returns:
        The mean loss of each epoch.
    """
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    curve = []
    for epoch in range(epochs):
        total, batches = 0.0, plan_batches(keys, min(batch_size, len(keys)), seed, epoch)
        if not batches:
            raise CodetuneError(
                f"head.batch_size: {batch_size}: the {len(keys)} training rows cannot fill one batch without "
                "repeating a text; use a smaller head.batch_size or more data"
            )
        for idx in batches:
            loss, _ = loss_fn(head(queries[idx]), positives[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        curve.append(total / max(len(batches), 1))
    return curve
