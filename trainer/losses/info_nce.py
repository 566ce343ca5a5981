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
) -> torch.Tensor:
    """Cross-entropy of each query against all candidates, its positive being ``labels[i]``.

    Args:
        queries: (b, D) float, L2-normalised.
        candidates: (C, D) float, L2-normalised: all positives of the (global) batch, then any
            hard negatives. Every candidate that is not a query's positive is its negative.
        labels: (b,) long, index of each query's positive in ``candidates``.
        temperature: softmax temperature; 0.05 equals sentence-transformers' default scale of 20.

    Returns:
        Scalar mean loss over the b queries.

    Example:
        >>> q = F.normalize(torch.randn(4, 8), dim=-1)
        >>> loss = info_nce(q, q, torch.arange(4), temperature=0.05)
    """
    scores = queries @ candidates.T  # (b, C) cosines
    return F.cross_entropy(scores / temperature, labels)
