"""The shared evaluator: every model in codetune is scored here, the same way.

Queries and documents are each encoded once, at full dimension; every Matryoshka dimension is then
a truncation + re-normalisation of those embeddings, followed by exact top-k in chunks.
"""

from __future__ import annotations

from sentence_transformers import SentenceTransformer

from trainer.data.beir import BeirData
from trainer.errors import CodetuneError
from trainer.metrics import MAX_K, retrieval_metrics
from trainer.retrieval import encode, normalize_truncate, top_k

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
) -> dict[str, dict[str, float]]:
    """Score ``model`` on ``data`` at every dimension from one encoding pass.

    Returns:
        ``{str(dim): {"ndcg@10": ..., "mrr@10": ..., "recall@1": ..., ..., "map@100": ...}}``
    """
    relevant = data.relevant()
    if not relevant:
        raise CodetuneError("evaluation data has no query with a relevant document")
    qids = list(relevant)
    doc_ids = list(data.corpus)
    was_training = model.training
    model.eval()
    q = encode(model, [data.queries[i] for i in qids], "query", batch_size, show_progress)  # (Q, D)
    d = encode(model, [data.document_text(i) for i in doc_ids], "document", batch_size, show_progress)  # (N, D)
    model.train(was_training)
    results = {}
    for dim in resolve_dims(dims, q.shape[1]):
        _, idx = top_k(normalize_truncate(q, dim), normalize_truncate(d, dim), MAX_K)  # (Q, k)
        rankings = {qid: [doc_ids[j] for j in row] for qid, row in zip(qids, idx.tolist())}
        results[str(dim)] = retrieval_metrics(rankings, relevant)
    return results
