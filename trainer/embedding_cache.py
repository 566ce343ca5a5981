"""Encode once, reuse across runs: embeddings on disk, keyed by the model's weights and the texts."""

from __future__ import annotations

import hashlib
import pickle

import torch
from sentence_transformers import SentenceTransformer

from trainer.fileio import atomic_write_with, cache_root
from trainer.retrieval import Kind, encode


def model_fingerprint(model: SentenceTransformer) -> str:
    """A hash of the weights, prompts and sequence length: what changes the embeddings.

    A model exported to OpenVINO (:mod:`trainer.models.backends`) has no torch weights to hash; it
    carries a fingerprint of those it was exported from and of its compute.
    """
    exported = getattr(model, "codetune_fingerprint", None)
    if exported is not None:
        return exported
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().flatten()[:1024].float().cpu().numpy().tobytes())  # a prefix per tensor is enough
    h.update(repr((sorted(model.prompts.items()), model.max_seq_length)).encode())
    return h.hexdigest()[:16]


def cached_encode(
    model: SentenceTransformer, texts: list[str], kind: Kind, batch_size: int = 64, compute: str = "fp32"
) -> tuple[torch.Tensor, bool]:
    """Embeddings of ``texts`` as ``kind``, from the cache when this model already encoded them.

    ``compute``: ``fp32``, or ``bf16`` autocast (see :func:`trainer.retrieval.encode_share`); part of the key.

    Returns:
        (N, D) float32 on CPU, and whether it came from the cache.
    """
    # fp32 keeps the key it had before compute existed, so caches written then stay valid
    h = hashlib.sha256(f"{model_fingerprint(model)}:{kind}{'' if compute == 'fp32' else ':' + compute}".encode())
    for text in texts:
        h.update(hashlib.sha256(text.encode()).digest())
    path = cache_root() / "embeddings" / f"{h.hexdigest()[:24]}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True), True  # a tensor file: never run pickled code
        except (pickle.UnpicklingError, RuntimeError, EOFError):
            print(f"embedding cache {path}: not a plain tensor file; encoding again")
    # clone(): encode returns inference-mode tensors, which autograd refuses as inputs
    emb = encode(model, texts, kind, batch_size, show_progress=True, compute=compute).cpu().clone()
    atomic_write_with(path, lambda f: torch.save(emb, f))
    return emb, False
