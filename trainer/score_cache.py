"""The base model's scores, kept across runs: a run on a model and data already scored skips the base evaluation.

A run scores its base model on the held-out split and on each ``eval.questions`` set before it
trains; the next run on the same model and data would get the same numbers again. They are kept
in ``$CODETUNE_CACHE/base-scores`` (default ``~/.cache/codetune``, beside the mined data), one small
JSON per key. The key is what decides the scores, and nothing else, so a run that changes only its
training settings reuses them:

- the model as loaded: a sample of every weight tensor, its name, dtype and shape; each module's
  settings (pooling, normalisation, architecture) and the transformer's config; the tokenizer;
  prompts and sequence length;
- the evaluation set's content and order (its queries, judgements and document texts);
- the dimensions and the batch size; the device type and the versions of the libraries that encode.

Deleting the folder forgets them. Bump :data:`VERSION` when the evaluator's output changes for the
same inputs (a new metric, a fix).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

from trainer.data.beir import BeirData
from trainer.embedding_cache import model_fingerprint
from trainer.fileio import atomic_write_json, cache_root

VERSION = 1
SAMPLES = 1024  # values hashed per tensor, spread over all of it: a tuned model differs in every one


def model_identity(model: SentenceTransformer) -> str:
    """A hash of what makes ``model``'s embeddings what they are (see the module's docstring); not of where it lies."""
    h = hashlib.sha256(model_fingerprint(model).encode())  # weights' first values, prompts, sequence length
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // SAMPLES)][:SAMPLES]
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(sample.float().cpu().numpy().tobytes())
    h.update(repr(model).encode())  # each module's settings: pooling mode, normalisation, architecture
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, transformers.PretrainedConfig):  # dropout, attention implementation, ...
            settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
            h.update(json.dumps(settings, sort_keys=True, default=str).encode())
            h.update(str(getattr(config, "_attn_implementation", None)).encode())
    h.update(_tokenizer_text(model.tokenizer).encode())
    return h.hexdigest()[:24]


def _tokenizer_text(tokenizer) -> str:
    """A fast tokenizer's definition (vocabulary, merges, normalizer); else its vocabulary.

    Less its padding and truncation: each encode call sets them (the sequence length is in the key
    already), so that the model's identity is the same before and after it encodes.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if hasattr(backend, "to_str"):
        spec = json.loads(backend.to_str())
        return json.dumps({k: v for k, v in spec.items() if k not in ("padding", "truncation")}, sort_keys=True)
    return json.dumps(sorted(tokenizer.get_vocab().items())) if hasattr(tokenizer, "get_vocab") else ""


def cache_path(identity: str, data: BeirData, dims: list[int], batch_size: int, device: str) -> Path:
    """Where the scores of the model with ``identity`` on ``data`` (as :func:`trainer.evaluator.evaluate` gets them) are kept."""
    h = hashlib.sha256()
    versions = (torch.__version__, transformers.__version__, sentence_transformers.__version__)
    h.update(json.dumps([VERSION, identity, dims, batch_size, torch.device(device).type, versions]).encode())
    h.update(data.fingerprint().encode())
    h.update("\0".join([*data.qrels, "", *data.corpus]).encode())  # the order ties and batches follow
    return cache_root() / "base-scores" / f"{h.hexdigest()[:24]}.json"


def load(path: Path, dims: list[int]) -> dict | None:
    """The scores kept at ``path``, or None when there are none (or the file is not what :func:`store` writes)."""
    try:
        scores = json.loads(path.read_text())["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return scores if isinstance(scores, dict) and set(scores) == {str(d) for d in dims} else None


def store(path: Path, scores: dict) -> None:
    """Keep ``scores`` at ``path`` (atomically: a run reading it at the same time sees all or nothing)."""
    atomic_write_json(path, {"version": VERSION, "metrics": scores})
