"""The one retrieval core: encode once, truncate to a Matryoshka dimension, exact top-k in chunks.

The evaluator, hard-negative mining and code search all need "encode, then top-k"; they share
these functions so that a score means the same thing everywhere.

Work splits across processes without changing the answer. A list of texts is cut into the same
length-sorted batches whatever the number of processes, and the batches are dealt round-robin
(:func:`encode_share`), so every text is encoded in the same batch, with the same padding, as one
process would encode it. Each process scores every query against its share of the documents and
the per-process top-k lists are merged (:func:`search`); ties rank the earlier document first
everywhere, so N processes return what one returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from trainer import hardware
from trainer.distributed import all_gather_rows
from trainer.errors import CodetuneError

Kind = Literal["query", "document"]
COMPUTES = ("auto", "bf16", "fp32")  # torch arithmetic
# Encoding through an OpenVINO graph instead (trainer.models.backends); for indexing and scoring only.
BACKEND_COMPUTES = ("openvino", "openvino-int8")
ENCODER_COMPUTES = COMPUTES + BACKEND_COMPUTES


def check_compute(compute: str, flag: str = "--compute", choices: tuple[str, ...] = COMPUTES) -> None:
    """A one-line error naming ``flag`` unless ``compute`` is one of ``choices``."""
    if compute not in choices:
        raise CodetuneError(f"{flag} {compute}: choose from {', '.join(choices)}")


def resolve_compute(compute: str, choices: tuple[str, ...] = COMPUTES) -> str:
    """``auto``: ``bf16`` where the hardware has bf16 matrix units (as training's ``mixed_precision: auto``), else ``fp32``.

    A backend's compute (one of :data:`BACKEND_COMPUTES`, where ``choices`` has it) passes through:
    the exported model decides its own arithmetic, and :func:`encode` adds no autocast to it.
    """
    check_compute(compute, choices=choices)
    if compute == "auto":
        return "bf16" if hardware.bf16_supported() else "fp32"
    return compute


def _autocast(device: torch.device, compute: str):
    """bf16 autocast for inference on CPU or CUDA: matmuls in bf16, layer norms and softmax kept in fp32."""
    enabled = compute == "bf16" and device.type in ("cpu", "cuda")
    return torch.autocast(device.type if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)


def length_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """Positions of ``texts`` in batches of similar length, longest first (sentence-transformers' order, stable)."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


@dataclass
class Share:
    """One process's share of an encoded list of texts.

    Attributes:
        embeddings: (n, D) at the model's full dimension, not normalised; rows in ascending position.
        positions: (n,) long, on the embeddings' device: each row's place in the whole list.
        total: the length of the whole list.
        world: how many processes share the list; with more than one, functions taking a share are collective.
    """

    embeddings: torch.Tensor
    positions: torch.Tensor
    total: int
    world: int = 1


@torch.no_grad()
def encode_share(
    model: SentenceTransformer,
    texts: list[str],
    kind: Kind,
    batch_size: int = 64,
    rank: int = 0,
    world: int = 1,
    dtype: torch.dtype = torch.float32,
    show_progress: bool = False,
    compute: str = "fp32",
) -> Share:
    """Encode process ``rank``'s share of ``texts`` (every ``world``-th length-sorted batch); no communication.

    ``encode_query``/``encode_document`` apply the model's prompts and its ``Router`` route, so
    asymmetric models need no special case here. Each batch is written into one preallocated
    tensor of ``dtype`` (fp16 halves a corpus's memory), so peak memory is the share plus a batch.
    ``compute="bf16"`` runs the model under bf16 autocast: 2.6x the texts/s of fp32 on a 2-core CPU
    with AVX512-BF16, cosine to the fp32 embedding 0.99997 or more (``bench/search_scale.py``).
    The evaluator keeps fp32, so that scores compare across machines. A backend's compute runs
    several batches at once where it can (:func:`trainer.models.backends.encode_async`), giving the
    embeddings the model's own encode gives.
    """
    fn = model.encode_query if kind == "query" else model.encode_document
    batches = length_batches(texts, batch_size)[rank::world]
    positions = torch.tensor(sorted(i for batch in batches for i in batch), dtype=torch.long)
    slot = torch.empty(len(texts), dtype=torch.long)
    slot[positions] = torch.arange(len(positions))
    out = torch.empty(len(positions), model.get_embedding_dimension() or 0, dtype=dtype, device=model.device)
    embedded = None
    if compute in BACKEND_COMPUTES:
        # Here: backends imports this module, and a torch model's callers need none of it.
        from trainer.models.backends import encode_async

        embedded = encode_async(model, [[texts[i] for i in batch] for batch in batches], kind)
    if embedded is None:
        embedded = (_encode_batch(fn, [texts[i] for i in batch], model.device, compute) for batch in batches)
    progress = tqdm(zip(batches, embedded), desc=f"encoding {kind} batches", total=len(batches), disable=not show_progress)
    for batch, emb in progress:  # emb: (b, D)
        out[slot[batch].to(out.device)] = emb.to(dtype)
    return Share(out, positions.to(out.device), len(texts), world)


def _encode_batch(fn, texts: list[str], device: torch.device, compute: str) -> torch.Tensor:
    """One batch through the model's own ``encode_query``/``encode_document`` (``fn``): (b, D)."""
    with _autocast(device, compute):
        return fn(texts, batch_size=len(texts), convert_to_tensor=True, normalize_embeddings=False, show_progress_bar=False)


def encode(
    model: SentenceTransformer,
    texts: list[str],
    kind: Kind,
    batch_size: int = 64,
    show_progress: bool = False,
    compute: str = "fp32",
) -> torch.Tensor:
    """Encode ``texts`` as queries or documents at the model's full dimension, in this process alone.

    ``compute``: ``fp32`` or ``bf16`` (autocast; see :func:`encode_share`).

    Returns:
        (N, D) float32 on the model's device, *not* normalised: callers truncate first, then
        normalise (see :func:`normalize_truncate`).
    """
    return encode_share(model, texts, kind, batch_size, show_progress=show_progress, compute=compute).embeddings


def gather_share(share: Share) -> torch.Tensor:
    """Every process's share put together: (total, D), rows in the list's order (collective when shared)."""
    if share.world == 1:
        return share.embeddings
    rows = all_gather_rows(share.embeddings)  # (total, D), in rank order
    positions = all_gather_rows(share.positions)  # (total,)
    out = torch.empty_like(rows)
    out[positions] = rows
    return out


def normalize_truncate(emb: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Keep the first ``dim`` coordinates and L2-normalise: a Matryoshka embedding at ``dim``.

    Args:
        emb: (N, D) float.
        dim: target dimension, at most D; None keeps D.

    Returns:
        (N, dim) float32, unit rows.
    """
    if dim is not None:
        emb = emb[:, :dim]
    return F.normalize(emb.float(), dim=-1)


def _best(scores: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` highest scores, ties going to the smaller id, ordered by (score desc, id asc).

    Args:
        scores: (q, m) float32.
        ids: (q, m) or (m,) long, distinct within a row.

    Returns:
        scores (q, k') and ids (q, k'), k' = min(k, m).
    """
    ids = ids.expand_as(scores)
    k = min(k, scores.shape[1])
    if k == 0:
        return scores[:, :0], ids[:, :0]
    best, where = scores.topk(k, dim=1)  # (q, k): the k-th score is exact, not which tied ids reach it
    best_ids = ids.gather(1, where)
    cut = best[:, -1:]  # (q, 1)
    for r in ((scores >= cut).sum(1) > k).nonzero().flatten().tolist():  # rows where ties straddle the cut: rare
        above = (scores[r] > cut[r]).nonzero().flatten()
        tied = (scores[r] == cut[r]).nonzero().flatten()
        tied = tied[ids[r, tied].argsort()][: k - len(above)]
        keep = torch.cat([above, tied])
        best[r], best_ids[r] = scores[r, keep], ids[r, keep]
    best_ids, order = best_ids.sort(dim=1)
    best, order2 = best.gather(1, order).sort(dim=1, descending=True, stable=True)
    return best, best_ids.gather(1, order2)


@torch.no_grad()
def top_k(
    queries: torch.Tensor,
    docs: torch.Tensor,
    k: int,
    query_chunk: int = 1024,
    doc_chunk: int = 65536,
    dim: int | None = None,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by cosine similarity, never holding more than one score block.

    Both sides are truncated to ``dim`` and L2-normalised here, the documents block by block, so
    ``docs`` may be raw embeddings in a narrow dtype (fp16) and is never copied whole. Ties rank
    the document with the smaller position first, so the result does not depend on the blocks.

    Args:
        queries: (Q, D) float.
        docs: (N, D) float of any dtype, on the same device.
        k: hits per query; clipped to N.
        query_chunk, doc_chunk: block sizes; memory is O(query_chunk * (doc_chunk + k)).
        dim: Matryoshka dimension, at most D; None keeps D.
        positions: (N,) long, the id of each document row; None: its row number.

    Returns:
        scores (Q, k) float32, descending per row, and ids (Q, k) long: positions of documents.
    """
    k = min(k, docs.shape[0])
    if positions is None:
        positions = torch.arange(docs.shape[0], device=docs.device)
    queries = normalize_truncate(queries, dim)
    all_scores, all_ids = [], []
    for qs in range(0, queries.shape[0], query_chunk):
        q = queries[qs : qs + query_chunk]  # (q, dim)
        best = torch.empty((q.shape[0], 0), device=q.device)
        best_ids = torch.empty((q.shape[0], 0), dtype=torch.long, device=q.device)
        for ds in range(0, docs.shape[0], doc_chunk):
            block = q @ normalize_truncate(docs[ds : ds + doc_chunk], dim).T  # (q, d)
            s, i = _best(block, positions[ds : ds + doc_chunk], k)
            best, best_ids = _best(torch.cat([best, s], 1), torch.cat([best_ids, i], 1), k)
        all_scores.append(best)
        all_ids.append(best_ids)
    if not all_scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(all_scores), torch.cat(all_ids)


@torch.no_grad()
def search(queries: torch.Tensor, docs: Share, k: int, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of every query among all documents: this process scores its share, the lists are merged.

    A collective call when ``docs`` is shared by several processes; every process gets the merged lists.

    Args:
        queries: (Q, D) float, the same on every process.
        docs: this process's share of the documents.
        k: hits per query; clipped to the number of documents.
        dim: Matryoshka dimension, at most D; None keeps D.

    Returns:
        scores (Q, k) float32, descending per row, and ids (Q, k) long: positions in the whole list.
    """
    scores, ids = top_k(queries, docs.embeddings, k, dim=dim, positions=docs.positions)
    if docs.world == 1:
        return scores, ids
    k = min(k, docs.total)
    missing = k - scores.shape[1]  # a process may hold fewer than k documents
    scores = F.pad(scores, (0, missing), value=float("-inf"))
    ids = F.pad(ids, (0, missing), value=docs.total)  # after every real id, so never chosen over one
    every_scores = all_gather_rows(scores[None])  # (world, Q, k)
    every_ids = all_gather_rows(ids[None])  # (world, Q, k)
    q = scores.shape[0]
    return _best(every_scores.permute(1, 0, 2).reshape(q, -1), every_ids.permute(1, 0, 2).reshape(q, -1), k)
