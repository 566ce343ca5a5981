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
    teacher_scores: torch.Tensor | None = None,
    teacher_weight: float = 0.0,
    teacher_temperature: float = 0.05,
    teacher_only_right: bool = True,
) -> torch.Tensor:
    """Cross-entropy of each query against all candidates, its positive being ``labels[i]``.

    With ``teacher_scores``, the target is no longer the positive alone: a share ``teacher_weight``
    of it is the teacher's softmax over the same candidates (score distillation, as in
    Hofstätter et al. 2021 and RocketQAv2), so the student also learns *how much* each negative
    resembles the query, as a stronger model sees it. With ``teacher_only_right``, only where the
    teacher ranks the positive first: a query it gets wrong keeps the one-hot target. Among a function's neighbours in its
    own file, all-mpnet-base-v2 ranks the positive first for half of the standard library's
    queries; distilled there too, the student learned to tell neighbours apart less well (out of
    domain -2.2 NDCG@10, docs/quality.md).

    Args:
        queries: (b, D) float, L2-normalised.
        candidates: (C, D) float, L2-normalised: all positives of the (global) batch, then any
            hard negatives. Every candidate that is not a query's positive is its negative.
        labels: (b,) long, index of each query's positive in ``candidates``.
        temperature: softmax temperature; 0.05 equals sentence-transformers' default scale of 20.
        teacher_scores: (b, C) float or None, the teacher's cosines of the same pairs.
        teacher_weight: share of the target taken from the teacher, in [0, 1].
        teacher_temperature: the teacher's softmax temperature.
        teacher_only_right: distil only the queries whose positive the teacher ranks first.

    Returns:
        Scalar mean loss over the b queries.

    Example:
        >>> q = F.normalize(torch.randn(4, 8), dim=-1)
        >>> loss = info_nce(q, q, torch.arange(4), temperature=0.05)
    """
    logits = (queries @ candidates.T) / temperature  # (b, C) cosines, scaled
    loss = F.cross_entropy(logits, labels)
    if teacher_scores is None or teacher_weight == 0:
        return loss
    teacher_scores = teacher_scores.float()
    share = torch.full_like(teacher_scores[:, :1], teacher_weight)  # (b, 1)
    if teacher_only_right:
        share = share * (teacher_scores.argmax(-1) == labels).float().unsqueeze(-1)
    hard = F.one_hot(labels, logits.shape[-1]).float()  # (b, C)
    target = (1 - share) * hard + share * F.softmax(teacher_scores / teacher_temperature, dim=-1)
    return F.cross_entropy(logits, target)
