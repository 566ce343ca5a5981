"""Dense vectors at a chosen precision, and exact search over them with FAISS.

An index stores each function's Matryoshka-truncated, L2-normalised embedding in one of four
precisions; queries always stay float32 (asymmetric search), so only the documents lose detail:

=========  ====================  ==========================================================
precision  bytes per function     search
=========  ====================  ==========================================================
float32    4 * dim                ``IndexFlatIP``: cosine
float16    2 * dim                ``IndexScalarQuantizer(QT_fp16)``: cosine on the fp16 rows
int8       dim                    the codes of sentence-transformers' ``quantize_embeddings``
                                  (per-dimension ranges calibrated on the corpus), searched by an
                                  ``IndexScalarQuantizer(QT_8bit)`` given those same ranges: the
                                  float query against each code's bucket midpoint
binary     dim / 8                ``IndexBinaryFlat`` (Hamming on sign bits) for the top
                                  ``RESCORE_MULTIPLIER * k``, rescored with the float query
                                  against the +-1 vectors, divided by sqrt(dim)
=========  ====================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from trainer.errors import CodetuneError

PRECISIONS = ("float32", "float16", "int8", "binary")
RESCORE_MULTIPLIER = 4  # binary: Hamming candidates per hit, rescored with the float query


def faiss_module():
    try:
        import faiss  # here: ~0.2 s to import, and BM25-only queries never need it
    except ImportError:
        raise CodetuneError("code search needs FAISS: pip install faiss-cpu") from None
    return faiss


def check_precision(precision: str, dim: int) -> None:
    """One-line error for an unknown precision or a binary index whose dim is not whole bytes."""
    if precision not in PRECISIONS:
        raise CodetuneError(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")
    if precision == "binary" and dim % 8:
        raise CodetuneError(f"--precision binary: --dim {dim} must be a multiple of 8")


def bytes_per_vector(dim: int, precision: str) -> int:
    """Bytes one function's vector takes on disk and in memory."""
    return {"float32": 4 * dim, "float16": 2 * dim, "int8": dim, "binary": dim // 8}[precision]


def calibrate(emb: np.ndarray) -> np.ndarray:
    """Per-dimension ``[min; max]`` of ``emb`` (N, dim): (2, dim) float32, the int8 ranges."""
    return np.stack([emb.min(axis=0), emb.max(axis=0)]).astype(np.float32)


def quantize(emb: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Unit float rows (N, dim) -> stored rows: float32/float16 (N, dim), int8 (N, dim), binary uint8 (N, dim/8)."""
    # Here: sentence-transformers imports torch (seconds); `search query` never quantizes.
    from sentence_transformers.util.quantization import quantize_embeddings

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if precision == "float32":
        return emb
    if precision == "float16":
        return emb.astype(np.float16)
    if precision == "int8":
        return quantize_embeddings(emb, "int8", ranges=ranges)
    return quantize_embeddings(emb, "ubinary")


def _int8_steps(ranges: np.ndarray) -> np.ndarray:
    """(dim,) bucket widths: code c (int8) of dimension j stands for ``ranges[0, j] + (c + 128.5) * step_j``."""
    steps = (ranges[1] - ranges[0]) / 255
    return np.where(steps == 0, 1, steps).astype(np.float32)  # as quantize_embeddings does for a constant dimension


def dequantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Stored rows -> the float32 rows (N, dim) that search scores against."""
    if precision in ("float32", "float16"):
        return vectors.astype(np.float32)
    if precision == "int8":
        return ranges[0] + (vectors.astype(np.float32) + 128.5) * _int8_steps(ranges)
    bits = np.unpackbits(vectors, axis=-1).astype(np.float32)  # (N, dim) of 0/1
    return (2 * bits - 1) / np.sqrt(bits.shape[1])


@dataclass
class DenseIndex:
    """Stored rows of one precision and a FAISS index over them.

    Attributes:
        vectors: (N, dim) float32/float16/int8, or (N, dim/8) uint8 for binary.
        ranges: (2, dim) float32 int8 calibration, else None.
    """

    precision: str
    dim: int
    vectors: np.ndarray
    ranges: np.ndarray | None = None

    @cached_property
    def faiss(self) -> Any:
        return self._build(self.vectors)

    def _build(self, vectors: np.ndarray) -> Any:
        faiss = faiss_module()
        if self.precision == "binary":
            index = faiss.IndexBinaryFlat(self.dim)
            index.add(np.ascontiguousarray(vectors))
            return index
        if self.precision == "float32":
            index = faiss.IndexFlatIP(self.dim)
        elif self.precision == "float16":
            index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            # FAISS's 8-bit codec with sentence-transformers' ranges: it re-encodes each bucket midpoint to the
            # same code. (Its QT_8bit_direct codecs score wrongly from 32 dims on in faiss-cpu 1.15.)
            index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            trained = np.concatenate([self.ranges[0], 255 * _int8_steps(self.ranges)]).astype(np.float32)
            faiss.copy_array_to_vector(trained, index.sq.trained)
            index.is_trained = True
        for start in range(0, len(vectors), 65536):  # converts to float32 a block at a time
            block = vectors[start : start + 65536]
            index.add(np.ascontiguousarray(dequantize(block, self.precision, self.ranges), dtype=np.float32))
        return index

    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query, best first.

        Args:
            queries: (Q, dim) float32, L2-normalised.
            rows: restrict the search to these row numbers (a filter); None: every row.

        Returns:
            scores (Q, k') float32 and ids (Q, k') int64 into ``vectors``, k' = min(k, candidates).
        """
        vectors = self.vectors if rows is None else self.vectors[rows]
        k = min(k, len(vectors))
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        index = self.faiss if rows is None else self._build(vectors)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.precision == "binary":
            _, cand = index.search(quantize(queries, "binary"), min(len(vectors), RESCORE_MULTIPLIER * k))  # (Q, m)
            found = dequantize(vectors[cand.reshape(-1)], "binary").reshape(*cand.shape, self.dim)  # (Q, m, dim)
            rescored = np.einsum("qd,qmd->qm", queries, found)  # (Q, m)
            order = np.argsort(-rescored, axis=1, kind="stable")[:, :k]
            scores, ids = np.take_along_axis(rescored, order, 1), np.take_along_axis(cand, order, 1)
        else:
            scores, ids = index.search(queries, k)
        ids = ids.astype(np.int64)
        return scores.astype(np.float32), (ids if rows is None else rows[ids])
