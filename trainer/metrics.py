"""Pure ranking metrics with binary relevance, as in BEIR and sentence-transformers.

Each function takes one query's ranked document ids (best first) and the set of relevant ids;
:func:`retrieval_metrics` averages them over queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def mrr_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Reciprocal rank of the first relevant hit in the top k, else 0."""
    for rank, doc in enumerate(ranked[:k], 1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant documents found in the top k."""
    return sum(doc in relevant for doc in ranked[:k]) / len(relevant)


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Binary-gain NDCG: DCG of the top k over the DCG of an ideal ranking."""
    dcg = sum(1.0 / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], 1) if doc in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def average_precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Mean of precision at each relevant hit in the top k, over min(k, |relevant|)."""
    hits, total = 0, 0.0
    for rank, doc in enumerate(ranked[:k], 1):
        if doc in relevant:
            hits += 1
            total += hits / rank
    return total / min(k, len(relevant))


METRICS = {
    "ndcg@10": (ndcg_at_k, 10),
    "mrr@10": (mrr_at_k, 10),
    "recall@1": (recall_at_k, 1),
    "recall@5": (recall_at_k, 5),
    "recall@10": (recall_at_k, 10),
    "recall@100": (recall_at_k, 100),
    "map@100": (average_precision_at_k, 100),
}
"""The metrics every model is judged by: name -> (function, cut-off)."""

MAX_K = max(k for _, k in METRICS.values())


def retrieval_metrics(rankings: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]]) -> dict[str, float]:
    """Average each metric in :data:`METRICS` over the queries of ``relevant``.

    Args:
        rankings: query id -> document ids, best first (at least :data:`MAX_K` where the corpus allows).
        relevant: query id -> non-empty set of relevant document ids.
    """
    n = len(relevant)
    return {
        name: sum(fn(rankings[qid], docs, k) for qid, docs in relevant.items()) / n
        for name, (fn, k) in METRICS.items()
    }
