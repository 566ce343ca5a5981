"""Hard negatives: documents a model ranks high for a query that are not its answer.

For each training row the query is searched against the pool of all distinct positives of the
dataset (encoded once, with :mod:`trainer.retrieval`). Hits inside a rank window are candidates:
the very top is skipped because, in mined code, a top hit that is not the labelled positive is
often another correct answer (an overload, a copy in another module). A candidate is also
dropped when it is a *false negative*:

- it is a positive of the same query;
- it has the same code as one of them, up to whitespace (:func:`trainer.data.filters.code_key`);
- it is the same function (same ``path`` and ``name``) in another version;
- its cosine similarity to the positive exceeds ``max_similarity``.

The first ``per_query`` survivors, in rank order, become the row's ``negatives``; a row may get
fewer when the window runs out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import datasets
from sentence_transformers import SentenceTransformer

from trainer import distributed
from trainer.data.filters import code_key
from trainer.errors import CodetuneError
from trainer.retrieval import encode_share, gather_share, normalize_truncate, search


@dataclass(frozen=True)
class NegativesConfig:
    """Which hits become negatives."""

    window: tuple[int, int] = (10, 50)  # 0-based ranks [start, stop): (10, 50) takes the 11th to the 50th hit
    per_query: int = 3  # at most this many per row
    max_similarity: float = 0.95  # cosine to the positive above which a hit is taken for a copy of it
    batch_size: int = 64  # encoding batch

    def __post_init__(self) -> None:
        start, stop = self.window
        if not 0 <= start < stop:
            raise CodetuneError(f"window: {start} {stop} must be two ranks with 0 <= start < stop")
        if self.per_query < 1:
            raise CodetuneError(f"per_query: {self.per_query} must be at least 1")


def mine_hard_negatives(
    model: SentenceTransformer,
    rows: datasets.Dataset,
    config: NegativesConfig | None = None,
    show_progress: bool = False,
    across_processes: bool = False,
) -> datasets.Dataset:
    """``rows`` with a ``negatives`` column (replacing any there was) of hard negatives.

    Args:
        model: the encoder whose ranking decides what is hard.
        rows: a dataset with ``query`` and ``positive`` columns; ``path`` and ``name``, when
            present and not empty, identify functions across versions.
        config: window, count and threshold; :class:`NegativesConfig` defaults when None.
        show_progress: progress bars while encoding.
        across_processes: every process of the group encodes and searches a share, and every
            one gets the same rows back; a collective call then. Without a group it changes nothing.
    """
    config = config or NegativesConfig()
    rank, world = (distributed.rank(), distributed.world_size()) if across_processes else (0, 1)
    show_progress = show_progress and rank == 0
    start, stop = config.window
    queries, positives = rows["query"], rows["positive"]
    pool = list(dict.fromkeys(positives))  # distinct documents, first-seen order
    pool_index = {text: i for i, text in enumerate(pool)}
    distinct_queries = list(dict.fromkeys(queries))
    query_index = {text: i for i, text in enumerate(distinct_queries)}

    shared = encode_share(model, pool, "document", config.batch_size, rank, world, show_progress=show_progress)
    encoded_queries = gather_share(
        encode_share(model, distinct_queries, "query", config.batch_size, rank, world, show_progress=show_progress)
    )  # (Q, D)
    _, hits = search(encoded_queries, shared, stop)  # (Q, min(stop, N))
    hits = hits.cpu().tolist()
    docs = normalize_truncate(gather_share(shared))  # (N, D): the filter compares hits with positives

    keys = [code_key(text) for text in pool]
    identities = _identities(rows, pool_index, len(pool))
    answers: dict[str, set[int]] = defaultdict(set)  # query -> pool ids of all its positives
    for query, positive in zip(queries, positives):
        answers[query].add(pool_index[positive])

    negatives = []
    for query, positive in zip(queries, positives):
        correct = answers[query]
        correct_keys = {keys[i] for i in correct}
        correct_ids = set().union(*(identities[i] for i in correct))
        candidates = [c for c in hits[query_index[query]][start:] if c not in correct and keys[c] not in correct_keys]
        candidates = [c for c in candidates if not identities[c] & correct_ids]
        if candidates:
            sims = docs[candidates] @ docs[pool_index[positive]]  # (C,)
            candidates = [c for c, s in zip(candidates, sims.tolist()) if s <= config.max_similarity]
        negatives.append([pool[c] for c in candidates[: config.per_query]])
    if "negatives" in rows.column_names:
        rows = rows.remove_columns("negatives")
    return rows.add_column("negatives", negatives, feature=datasets.List(datasets.Value("string")))


def _identities(rows: datasets.Dataset, pool_index: dict[str, int], size: int) -> list[set[tuple[str, str]]]:
    """Pool id -> the (path, name) pairs it appears under, where rows carry both."""
    out: list[set[tuple[str, str]]] = [set() for _ in range(size)]
    if {"path", "name"} <= set(rows.column_names):
        for positive, path, name in zip(rows["positive"], rows["path"], rows["name"]):
            if path and name:
                out[pool_index[positive]].add((path, name))
    return out
