"""An orthogonal rotation of the embedding space onto its principal axes, baked into the model.

A model trained without a Matryoshka objective (all-MiniLM-L6-v2, CodeBERT) spreads what it knows
over all of its coordinates, so its first 64 say little more than any other 64. Rotated onto the
principal axes of its own embeddings of the training data, the leading coordinates carry the
most variance: truncation keeps the most of each vector. The rotation is orthogonal, so cosine
similarity at the full dimension is exactly unchanged; only the order of the coordinates moves.
Measured on the embedded default before any training (bench/quality.py, out of domain, NDCG@10
at 256/128/64): 54.14/50.52/41.24 against 52.65/46.90/39.53 unrotated. Matryoshka training then
starts from those prefixes instead of arbitrary ones.

The rotation is a frozen, bias-free sentence-transformers ``Dense`` module after pooling, so the
saved model is a plain sentence-transformers folder that applies it by itself.

After training (and the merge with the base), :func:`refit` folds a second rotation into the same
module, fitted on the tuned model's embeddings: out of domain at 64 dims +1.15 / +0.19 on two
seeds, the full dimension untouched.
"""

from __future__ import annotations

import random

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize
from sentence_transformers.sentence_transformer.modules import Dense

from trainer.retrieval import encode_share, gather_share
from trainer.rows import Rows, take


def principal_axes(embeddings: torch.Tensor) -> torch.Tensor:
    """The orthogonal matrix whose rows are the principal axes of ``embeddings``, by falling variance.

    Args:
        embeddings: (N, D) float, the model's output for a sample of texts.

    Returns:
        (D, D) float32 ``R`` with ``R @ R.T == I``; ``R @ e`` puts the most varying direction first.
    """
    x = embeddings.float()
    x = x - x.mean(0)
    _, axes = torch.linalg.eigh(x.T @ x / len(x))  # ascending eigenvalues, axes as columns
    return axes.flip(1).T.contiguous()


def add_rotation(model: SentenceTransformer, rotation: torch.Tensor | None = None) -> Dense:
    """Add a frozen ``Dense`` that multiplies every embedding by ``rotation`` (identity when None).

    It goes before a final ``Normalize`` (normalising commutes with an orthogonal matrix), so the
    model still ends as it did and the projection-head recipe can build on it. A resumed run adds
    the identity and lets its checkpoint restore the fitted matrix.
    """
    dim = model.get_embedding_dimension()
    layer = Dense(dim, dim, bias=False, activation_function=torch.nn.Identity())
    layer.linear.weight.data.copy_(rotation if rotation is not None else torch.eye(dim))
    layer.requires_grad_(False)
    model.insert(_rotation_index(model), layer.to(model.device))
    return layer


def _rotation_index(model: SentenceTransformer) -> int:
    """Where the rotation goes: before a final ``Normalize``, else at the end."""
    return len(model) - 1 if isinstance(model[-1], Normalize) else len(model)


def fit_rotation(model: SentenceTransformer, rows: Rows, sample: int = 512, seed: int = 0,
                 batch_size: int = 32, rank: int = 0, world: int = 1, show_progress: bool = False) -> torch.Tensor:
    """Principal axes of the model's embeddings of ``sample`` training rows' queries and code.

    Args:
        rows: training rows with ``query`` and ``positive``; a seeded sample of them is encoded
            (2 x ``sample`` texts: about 30 s for the default model at 256 tokens on 2 CPU cores).
        rank, world: this process and how many there are; each encodes 1/world of the texts and
            the shares are gathered (a collective when world > 1), as the evaluator does.

    Returns:
        (D, D) float32 rotation on the model's device (see :func:`principal_axes`).
    """
    picked = take(rows, random.Random(seed).sample(range(len(rows)), min(sample, len(rows))))  # these rows alone are read
    embeddings = [
        gather_share(encode_share(model, [r[key] for r in picked], kind, batch_size, rank, world, show_progress=show_progress))
        for key, kind in (("query", "query"), ("positive", "document"))
    ]
    return principal_axes(torch.cat(embeddings))


def rotate(model: SentenceTransformer, rows: Rows, acc: Accelerator, fit: bool = True, seed: int = 0,
           sample: int = 512) -> Dense:
    """Fit the rotation on ``rows`` and add it to ``model``, the same matrix on every process.

    Args:
        fit: False for a resumed run, whose checkpoint restores the fitted matrix into the
            identity added here.
    """
    rotation = _fit_everywhere(model, rows, acc, seed, sample, "model.pca_rotation") if fit else None
    return add_rotation(model, rotation)


def refit(model: SentenceTransformer, rows: Rows, acc: Accelerator, seed: int = 0, sample: int = 512) -> Dense:
    """Re-sort the trained model's coordinates along its own principal axes, folded into its rotation.

    Matryoshka training packs the most into the prefixes it was given, but not in the order of
    variance; a second rotation, fitted on the trained model's embeddings of ``rows``, puts the
    most varying directions first again. Full-dim similarity is unchanged; a model without a
    rotation layer gets one.
    """
    rotation = _fit_everywhere(model, rows, acc, seed, sample, "model.pca_refit")
    layer = rotation_layer(model)
    if layer is None:
        return add_rotation(model, rotation)
    weight = layer.linear.weight.data
    weight.copy_(rotation.to(weight) @ weight)
    return layer


def rotation_layer(model: SentenceTransformer) -> Dense | None:
    """The frozen square bias-free ``Dense`` before the final ``Normalize`` that :func:`add_rotation` puts there."""
    at = _rotation_index(model) - 1
    layer = model[at] if at >= 0 else None
    if not isinstance(layer, Dense) or layer.linear.bias is not None or layer.linear.weight.requires_grad:
        return None
    return layer if layer.linear.in_features == layer.linear.out_features else None


def _fit_everywhere(model: SentenceTransformer, rows: Rows, acc: Accelerator, seed: int, sample: int,
                    knob: str) -> torch.Tensor:
    """:func:`fit_rotation` with every process encoding its share; one matrix for all."""
    acc.print(f"{knob}: fitting the principal axes of {min(sample, len(rows))} training rows' embeddings")
    rotation = fit_rotation(model, rows, sample, seed, rank=acc.process_index, world=acc.num_processes,
                            show_progress=acc.is_main_process)
    if acc.num_processes > 1:
        # Every rank now holds the same embeddings, but eigh on another node's CPU may round
        # differently (and flip an axis's sign): one matrix for all.
        rotation = broadcast(rotation.contiguous(), from_process=0)
    return rotation
