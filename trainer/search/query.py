"""Querying an index: dense, lexical (BM25) or hybrid (reciprocal-rank fusion), with filters.

Hybrid takes the top :data:`FUSION_DEPTH` of each ranking and scores every snippet by
``sum(1 / (RRF_K + rank))`` over the rankings it appears in (Cormack et al., 2009), so neither
score scale needs calibrating against the other.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from trainer.data.languages import LANGUAGES
from trainer.errors import CodetuneError
from trainer.search.snippets import Hit
from trainer.search.store import SearchIndex

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODES = ("dense", "lexical", "hybrid")
DEFAULT_MODE = "hybrid"
RRF_K = 60
FUSION_DEPTH = 100


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise CodetuneError(f"--mode {mode}: choose from {', '.join(MODES)}")


def check_languages(languages: Sequence[str]) -> None:
    for lang in languages:
        if lang not in LANGUAGES:
            raise CodetuneError(f"--lang {lang}: choose from {', '.join(LANGUAGES)}")


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: ``[(id, sum of 1 / (k + rank))]`` best first (rank 1 = first); ties by first seen."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, 1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def selected_rows(index: SearchIndex, languages: Sequence[str] = (), path_glob: str | None = None) -> np.ndarray | None:
    """Row numbers that pass the filters (``fnmatch`` on the path, where ``*`` crosses ``/``), or None for all."""
    if not languages and path_glob is None:
        return None
    check_languages(languages)
    keep = [
        i
        for i, s in enumerate(index.snippets)
        if (not languages or s.language in languages) and (path_glob is None or fnmatch.fnmatchcase(s.path, path_glob))
    ]
    return np.asarray(keep, dtype=np.int64)


def _check_model(index: SearchIndex, model: SentenceTransformer | None) -> None:
    from trainer.embedding_cache import model_fingerprint  # here: torch, which a BM25 query never loads

    if model is None:
        raise CodetuneError("dense and hybrid search need the index's model")
    if model.get_embedding_dimension() != index.manifest["model_dim"]:
        raise CodetuneError(
            f"index {index.folder} built with {index.model_spec} at dim {index.dim}; queried with a model of "
            f"dimension {model.get_embedding_dimension()} (expected {index.manifest['model_dim']})"
        )
    if index.manifest["model_fingerprint"] != model_fingerprint(model):
        raise CodetuneError(
            f"index {index.folder}: built with other weights than {index.model_spec} holds now; "
            "re-run `index` so documents and queries come from one model"
        )


def _dense(index: SearchIndex, queries: Sequence[str], model, depth: int, rows, batch_size: int):
    from trainer.retrieval import encode, normalize_truncate  # here: torch, which a BM25 query never loads

    q = normalize_truncate(encode(model, list(queries), "query", batch_size, compute=index.compute), index.dim).cpu().numpy()  # (Q, dim)
    return index.dense.search(q, depth, rows)


def _lexical(index: SearchIndex, query: str, depth: int, rows) -> list[tuple[int, float]]:
    """(row, BM25) of the best ``depth`` rows sharing a word with the query."""
    scores = index.lexical.scores(query)  # (N,)
    candidates = np.flatnonzero(scores > 0) if rows is None else rows[scores[rows] > 0]
    best = candidates[np.argsort(-scores[candidates], kind="stable")[:depth]]
    return [(int(i), float(scores[i])) for i in best]


def search(
    index: SearchIndex,
    queries: Sequence[str],
    model: SentenceTransformer | None = None,
    k: int = 5,
    batch_size: int = 64,
    *,
    mode: str = DEFAULT_MODE,
    languages: Sequence[str] = (),
    path_glob: str | None = None,
) -> list[list[Hit]]:
    """Top-``k`` snippets per query, best first.

    Args:
        model: the index's model (checked by its weights); not needed for ``mode="lexical"``.
        mode: ``dense`` (cosine at the index dimension and precision), ``lexical`` (BM25; a
            snippet that shares no word with the query is never a hit) or ``hybrid`` (RRF of both).
        languages, path_glob: keep only snippets in these languages / whose path matches the glob.

    Returns:
        per query, up to ``k`` hits; fewer (possibly none) when filters or lexical matching leave fewer.
    """
    check_mode(mode)
    if mode != "lexical":
        _check_model(index, model)
    rows = selected_rows(index, languages, path_glob)
    if not index.snippets or not queries:
        return [[] for _ in queries]
    depth = k if mode != "hybrid" else max(k, FUSION_DEPTH)
    dense = _dense(index, queries, model, depth, rows, batch_size) if mode != "lexical" else None
    results = []
    for qi, query in enumerate(queries):
        if mode == "dense":
            ranked = [(int(i), float(s)) for s, i in zip(dense[0][qi], dense[1][qi])]
        else:
            lexical = _lexical(index, query, depth, rows)
            ranked = lexical if mode == "lexical" else rrf([dense[1][qi].tolist(), [i for i, _ in lexical]])
        results.append([Hit(score, index.snippets[i]) for i, score in ranked[:k]])
    return results
