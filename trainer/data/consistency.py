"""Consistency filtering: drop mined pairs whose query does not find its own function.

A docstring mined from code is not always a description of it: "Helper.", "See above.",
auto-generated stubs, a summary that fits a dozen overloads. Such pairs teach the model noise.
The standard remedy (E5, CodeSage and other code retrievers' recipes) keeps a pair only when a
trusted model already ranks its positive among the top ``k`` documents of the training pool
for its query: the base model is a weak judge of *which* function, but a good one of whether
the text describes code at all.
"""

from __future__ import annotations

import datasets
import torch
from sentence_transformers import SentenceTransformer

from trainer.retrieval import normalize_truncate


def positive_ranks(model: SentenceTransformer, rows: datasets.Dataset, batch_size: int = 64) -> list[int]:
    """0-based rank of each row's positive among the distinct positives of ``rows``, for its query.

    Embeddings come from the cross-run embedding cache, so a rerun on the same data costs nothing.
    """
    from trainer.embedding_cache import cached_encode  # imports trainer.data: not at module level

    pool = list(dict.fromkeys(rows["positive"]))
    where = {text: i for i, text in enumerate(pool)}
    docs = normalize_truncate(cached_encode(model, pool, "document", batch_size)[0])  # (N, D)
    queries = normalize_truncate(cached_encode(model, rows["query"], "query", batch_size)[0])  # (Q, D)
    ranks = []
    for start in range(0, len(queries), 1024):
        scores = queries[start : start + 1024] @ docs.T  # (q, N)
        own = torch.tensor([where[p] for p in rows["positive"][start : start + 1024]])
        mine = scores.gather(1, own[:, None])  # (q, 1)
        ranks.extend((scores > mine).sum(1).tolist())
    return ranks


def consistency_filter(
    model: SentenceTransformer, rows: datasets.Dataset, top_k: int, batch_size: int = 64
) -> tuple[datasets.Dataset, int]:
    """``rows`` whose positive ``model`` ranks in the top ``top_k`` for its query, and how many were dropped."""
    ranks = positive_ranks(model, rows, batch_size)
    keep = [i for i, r in enumerate(ranks) if r < top_k]
    return rows.select(keep), len(rows) - len(keep)
