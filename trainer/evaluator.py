"""The shared evaluator: every model in codetune is scored here, the same way.

Queries and documents are each encoded once, at full dimension; every Matryoshka dimension is then
a truncation + re-normalisation of those embeddings, followed by exact top-k in chunks. Across
processes each encodes 1/N of the queries and of the corpus, keeps its corpus share, and the
per-process top-k lists are merged (:mod:`trainer.retrieval`): N processes score what one scores.
"""

from __future__ import annotations

import torch
from sentence_transformers import SentenceTransformer

from trainer import distributed
from trainer.data.beir import BeirData
from trainer.errors import CodetuneError
from trainer.metrics import MAX_K, retrieval_metrics
from trainer.retrieval import Share, encode_share, gather_share, search

STANDARD_DIMS = (512, 256, 128, 64)


def default_dims(full_dim: int) -> list[int]:
    """The model's full dimension and each standard Matryoshka dimension below it."""
    return [full_dim] + [d for d in STANDARD_DIMS if d < full_dim]


def resolve_dims(dims: list[int] | None, full_dim: int, flag: str = "--dims") -> list[int]:
    """Check requested dims against the model's dimension; None means :func:`default_dims`."""
    if not dims:
        return default_dims(full_dim)
    for d in dims:
        if not 0 < d <= full_dim:
            raise CodetuneError(f"{flag}: dimension {d} is not between 1 and the model's dimension {full_dim}")
    return list(dict.fromkeys(dims))


def evaluate(
    model: SentenceTransformer,
    data: BeirData,
    dims: list[int] | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
    across_processes: bool = False,
    corpus_dtype: torch.dtype = torch.float16,
    corpus: Share | None = None,
    compute: str = "fp32",
) -> dict[str, dict[str, float]]:
    """Score ``model`` on ``data`` at every dimension from one encoding pass.

    Args:
        across_processes: every process of the group takes a share and gets the metrics; a
            collective call then, which every process must make. Without a group it changes nothing.
        corpus_dtype: how the corpus embeddings are kept; fp16 halves their memory, and scores
            are computed in fp32 from it.
        corpus: this process's share of the corpus from :func:`encode_corpus`, when another model
            already encoded it the same way: a query-only head sends documents through its base
            model, so the base's before and the head's after share one encoding of the corpus.
        compute: ``fp32`` (the default, so that scores compare across machines), ``bf16``
            autocast, or an exported model's backend (see :func:`trainer.retrieval.encode_share`).

    Returns:
        ``{str(dim): {"ndcg@10": ..., "mrr@10": ..., "recall@1": ..., ..., "map@100": ...}}``
    """
    relevant = data.relevant()
    if not relevant:
        raise CodetuneError("evaluation data has no query with a relevant document")
    rank, world = (distributed.rank(), distributed.world_size()) if across_processes else (0, 1)
    show_progress = show_progress and rank == 0
    qids = list(relevant)
    doc_ids = list(data.corpus)
    if corpus is not None and (corpus.total, corpus.world) != (len(doc_ids), world):
        raise ValueError(f"corpus: a share of {corpus.total} documents over {corpus.world} processes, "
                         f"not of this data's {len(doc_ids)} over {world}")
    was_training = model.training
    model.eval()
    queries = [data.queries[i] for i in qids]
    q = encode_share(model, queries, "query", batch_size, rank, world, show_progress=show_progress, compute=compute)
    q = gather_share(q)  # (Q, D): every process scores every query
    if corpus is None:
        corpus = encode_corpus(model, data, batch_size, show_progress, across_processes, corpus_dtype, compute)  # (~N/world, D)
    model.train(was_training)
    results = {}
    for dim in resolve_dims(dims, q.shape[1]):
        _, idx = search(q, corpus, MAX_K, dim)  # (Q, k)
        rankings = {qid: [doc_ids[j] for j in row] for qid, row in zip(qids, idx.tolist())}
        results[str(dim)] = retrieval_metrics(rankings, relevant)
    return results


def encode_corpus(
    model: SentenceTransformer,
    data: BeirData,
    batch_size: int = 64,
    show_progress: bool = True,
    across_processes: bool = False,
    corpus_dtype: torch.dtype = torch.float16,
    compute: str = "fp32",
) -> Share:
    """This process's share of ``data``'s corpus encoded as documents, for :func:`evaluate`'s ``corpus``.

    Returns:
        a :class:`Share` of (~N/world, D) embeddings in ``corpus_dtype``, in ``data.corpus`` order.
    """
    rank, world = (distributed.rank(), distributed.world_size()) if across_processes else (0, 1)
    was_training = model.training
    model.eval()
    docs = [data.document_text(i) for i in data.corpus]
    share = encode_share(model, docs, "document", batch_size, rank, world, corpus_dtype, show_progress and rank == 0, compute)
    model.train(was_training)
    return share
