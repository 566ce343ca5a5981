"""Encode once, reuse across runs: embeddings on disk, keyed by the model's weights and the texts."""

from __future__ import annotations

import hashlib
import pickle

import torch
from sentence_transformers import SentenceTransformer

from trainer.distributed import any_rank
from trainer.fileio import atomic_write_with, cache_root
from trainer.retrieval import Kind, encode_share, gather_share


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
    model: SentenceTransformer,
    texts: list[str],
    kind: Kind,
    batch_size: int = 64,
    compute: str = "fp32",
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, bool]:
    """Embeddings of ``texts`` as ``kind``, from the cache when this model already encoded them.

    ``compute``: ``fp32``, or ``bf16`` autocast (see :func:`trainer.retrieval.encode_share`); part of the key.
    ``rank``, ``world``: with several processes (a collective call), each encodes its share and
    all get every row; the first writes the cache, and it is read only when every process has it.

    Returns:
        (N, D) float32 on CPU, and whether it came from the cache.
    """
    # fp32 keeps the key it had before compute existed, so caches written then stay valid
    h = hashlib.sha256(f"{model_fingerprint(model)}:{kind}{'' if compute == 'fp32' else ':' + compute}".encode())
    for text in texts:
        h.update(hashlib.sha256(text.encode()).digest())
    path = cache_root() / "embeddings" / f"{h.hexdigest()[:24]}.pt"
    emb = _load(path) if path.is_file() else None
    if not any_rank(emb is None, model.device):  # a collective: all read it, or all encode
        return emb, True
    share = encode_share(model, texts, kind, batch_size, rank, world, show_progress=rank == 0, compute=compute)
    # clone(): encode returns inference-mode tensors, which autograd refuses as inputs
    emb = gather_share(share).cpu().clone()
    if rank == 0:
        atomic_write_with(path, lambda f: torch.save(emb, f))
    return emb, False


def _load(path) -> torch.Tensor | None:
    try:
        return torch.load(path, weights_only=True)  # a tensor file: never run pickled code
    except (pickle.UnpicklingError, RuntimeError, EOFError):
        print(f"embedding cache {path}: not a plain tensor file; encoding again")
        return None
