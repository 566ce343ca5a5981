"""The one retrieval core: encode once, truncate to a Matryoshka dimension, exact top-k in chunks.

The evaluator, hard-negative mining and code search all need "encode, then top-k"; they share
these functions so that a score means the same thing everywhere.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

Kind = Literal["query", "document"]


@torch.no_grad()
def encode(
    model: SentenceTransformer,
    texts: list[str],
    kind: Kind,
    batch_size: int = 64,
    show_progress: bool = False,
) -> torch.Tensor:
    """Encode ``texts`` as queries or documents at the model's full dimension.

    ``encode_query``/``encode_document`` apply the model's prompts and its ``Router`` route, so
    asymmetric models need no special case here.

    Returns:
        (N, D) float32 on the model's device, *not* normalised: callers truncate first, then
        normalise (see :func:`normalize_truncate`).
    """
    fn = model.encode_query if kind == "query" else model.encode_document
    if not texts:
        dim = model.get_embedding_dimension() or 0
        return torch.empty(0, dim, device=model.device)
    emb = fn(
        texts,
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=False,
        show_progress_bar=show_progress,
    )
    return emb.float()


def normalize_truncate(emb: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Keep the first ``dim`` coordinates and L2-normalise: a Matryoshka embedding at ``dim``.

    Args:
        emb: (N, D) float.
        dim: target dimension, at most D; None keeps D.

    Returns:
        (N, dim) float, unit rows.
    """
    if dim is not None:
        emb = emb[:, :dim]
    return F.normalize(emb.float(), dim=-1)


@torch.no_grad()
def top_k(
    queries: torch.Tensor,
    docs: torch.Tensor,
    k: int,
    query_chunk: int = 1024,
    doc_chunk: int = 65536,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by dot product (cosine for unit rows), never holding more than one score block.

    Args:
        queries: (Q, D) float, L2-normalised.
        docs: (N, D) float, L2-normalised, on the same device.
        k: hits per query; clipped to N.
        query_chunk, doc_chunk: block sizes; memory is O(query_chunk * (doc_chunk + k)).

    Returns:
        scores (Q, k) float, descending per row, and indices (Q, k) long into ``docs``.
    """
    k = min(k, docs.shape[0])
    all_scores, all_idx = [], []
    for qs in range(0, queries.shape[0], query_chunk):
        q = queries[qs : qs + query_chunk]  # (q, D)
        best_s = torch.full((q.shape[0], 0), float("-inf"), device=q.device)
        best_i = torch.empty((q.shape[0], 0), dtype=torch.long, device=q.device)
        for ds in range(0, docs.shape[0], doc_chunk):
            block = q @ docs[ds : ds + doc_chunk].T  # (q, d)
            s, i = block.topk(min(k, block.shape[1]), dim=1)
            best_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
            best_i = torch.cat([best_i, i + ds], 1).gather(1, order)
        all_scores.append(best_s)
        all_idx.append(best_i)
    if not all_scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(all_scores), torch.cat(all_idx)
