"""InfoNCE over a pool of candidate documents (in-batch, hard and cross-device negatives).

References:
    van den Oord et al., "Representation Learning with Contrastive Predictive Coding" (2018).
    Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply" (2017):
    every other positive in the batch is a negative for free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    false_negative_margin: float | None = None,
) -> torch.Tensor:
    """Cross-entropy of each query against all candidates, its positive being ``labels[i]``.

    Args:
        queries: (b, D) float, L2-normalised.
        candidates: (C, D) float, L2-normalised: all positives of the (global) batch, then any
            hard negatives. Every candidate that is not a query's positive is its negative.
        labels: (b,) long, index of each query's positive in ``candidates``.
        temperature: softmax temperature; 0.05 equals sentence-transformers' default scale of 20.
        false_negative_margin: a candidate whose cosine beats the positive's by more than this
            is masked out of the query's softmax: mined code holds unlabelled answers (overloads,
            copies), and pushing them away teaches the model to rank right answers low.

    Returns:
        Scalar mean loss over the b queries.

    Example:
        >>> q = F.normalize(torch.randn(4, 8), dim=-1)
        >>> loss = info_nce(q, q, torch.arange(4), temperature=0.05)
    """
    scores = queries @ candidates.T  # (b, C) cosines
    if false_negative_margin is not None:
        positive = scores.gather(1, labels[:, None])  # (b, 1)
        suspect = (scores > positive + false_negative_margin).detach()
        suspect[torch.arange(len(labels), device=labels.device), labels] = False
        scores = scores.masked_fill(suspect, float("-inf"))
    return F.cross_entropy(scores / temperature, labels)


def joint_info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    candidates: torch.Tensor,
    all_queries: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    doc_to_query: bool = True,
    hard_per_query: int = 0,
    false_negative_margin: float | None = None,
) -> torch.Tensor:
    """GTE's improved contrastive loss: one softmax per pair over every kind of in-batch rival.

    For the pair (q_i, d_i) the denominator holds q_i against every candidate document, q_i
    against every other query, d_i against every query (``doc_to_query``) and d_i against every
    other document but its own hard negatives. Same-type terms ask that two queries (or two
    functions) of the batch be told apart as well as a query from a wrong function: a uniformity
    pressure that keeps the embedding space spread out instead of fitting the pairs' direction alone.
    Equal to sentence-transformers' ``MultipleNegativesRankingLoss(directions=(all four or three),
    partition_mode="joint")``.

    Args:
        queries: (b, D) this process's queries, L2-normalised.
        positives: (b, D) their documents, L2-normalised.
        candidates: (C, D) all positives of the global batch (bW of them), then the hard negatives
            grouped by global query (``hard_per_query`` each), L2-normalised.
        all_queries: (bW, D) every query of the global batch, L2-normalised.
        labels: (b,) long, each query's global index (its positive's index in ``candidates``).
        temperature: softmax temperature.
        doc_to_query: include d_i against every query (GTE: yes).
        hard_per_query: hard negatives per query in ``candidates`` (masked out of d_i's own row).
        false_negative_margin: a rival of any kind whose cosine beats the positive's by more than
            this leaves the softmax; None: off.

    Returns:
        Scalar mean loss over the b pairs.

    References:
        Li et al., "Towards General Text Embeddings with Multi-stage Contrastive Learning" (2023), eq. 3.
    """
    rows = torch.arange(len(labels), device=labels.device)
    n_pos = all_queries.shape[0]
    qd = queries @ candidates.T  # (b, C)
    qq = queries @ all_queries.T  # (b, bW)
    qq[rows, labels] = float("-inf")  # a query is not its own rival
    dd = positives @ candidates.T  # (b, C)
    own = torch.zeros_like(dd, dtype=torch.bool)
    own[rows, labels] = True  # d_i itself
    for k in range(hard_per_query):  # and its own hard negatives, which are not its rivals
        own[rows, n_pos + labels * hard_per_query + k] = True
    dd = dd.masked_fill(own, float("-inf"))
    blocks = [qd, qq] + ([positives @ all_queries.T] if doc_to_query else []) + [dd]  # (b, bW) for d->q
    scores = torch.cat(blocks, dim=1)  # (b, C + bW [+ bW] + C)
    positive = qd.gather(1, labels[:, None])  # (b, 1)
    if false_negative_margin is not None:
        suspect = (scores > positive + false_negative_margin).detach()
        suspect[rows, labels] = False  # the positive itself, in the q->d block
        scores = scores.masked_fill(suspect, float("-inf"))
    return (torch.logsumexp(scores / temperature, dim=1) - positive[:, 0] / temperature).mean()
