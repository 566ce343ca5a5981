"""Which mined functions to keep: code size, trivial queries, exact and near-duplicate bodies.

Duplicates matter twice: a body in both train and test leaks the answer, and two copies of one
body in a retrieval corpus make one of them a false negative for the other's query.

- *Exact* duplicates share :func:`code_key`: the same tokens, whatever the whitespace, with the
  function's own name masked (a copy renamed is still a copy).
- *Near* duplicates have a Jaccard similarity of token 3-shingles at or above a threshold.
  Candidates come from ``datasketch``'s MinHash locality-sensitive hashing (64 hash functions in
  16 bands of 4: a pair at Jaccard 0.8 becomes a candidate with probability 0.9998) and are then
  checked exactly, so the threshold is exact and the cost stays near linear in the number of
  functions. :class:`NearIndex` is that index alone, for callers (decontamination) that look up
  texts against a fixed set rather than deduplicate a stream.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketch import MinHash

_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+|\S")
_NAME_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_FILLER = {"a", "an", "the"}

# What a function's text declares itself as, for texts that come without a name (see declared_name).
_DECLARED = re.compile(r"\b(?:def|fn|function|func)\b\s*\*?\s*(?:\([^)]*\)\s*)?([A-Za-z_]\w*)\s*[(<]")
_ASSIGNED = re.compile(r"\b(?:const|let|var)\s+([A-Za-z_]\w*)\s*=")
_CALLED = re.compile(r"([A-Za-z_]\w*)\s*\(")
_NOT_NAMES = {"if", "for", "while", "switch", "catch", "return", "new", "synchronized", "with", "elif", "super", "this"}
_ANNOTATION = re.compile(r"@[\w.]+(?:\([^)]*\))?")

_NUM_PERM, _BANDS = 64, 16


def code_tokens(code: str, name: str | None = None) -> list[str]:
    """Identifiers, numbers and single symbols of ``code``; the function's own short name becomes ``§``."""
    short = name.rsplit(".", 1)[-1] if name else None
    return ["§" if t == short else t for t in _TOKEN.findall(code)]


def declared_name(code: str) -> str | None:
    """The name a function's text declares (``def NAME``, ``fn``, ``function``, ``func (r T) NAME``,
    ``const NAME =``, else the first called-looking name after annotations), or None."""
    for pattern in (_DECLARED, _ASSIGNED):
        found = pattern.search(code)
        if found:
            return found.group(1)
    for found in _CALLED.finditer(_ANNOTATION.sub(" ", code)):
        if found.group(1) not in _NOT_NAMES:
            return found.group(1)
    return None


def code_key(code: str, name: str | None = None) -> str:
    """A hash equal for two bodies that differ only in whitespace (and, given ``name``, in their own name)."""
    return tokens_key(code_tokens(code, name))


def tokens_key(tokens: list[str]) -> str:
    """:func:`code_key` of tokens already split (callers that also shingle them tokenize once)."""
    return hashlib.blake2b("\x00".join(tokens).encode(), digest_size=16).hexdigest()


def code_lines(code: str) -> int:
    """Lines that hold something other than whitespace."""
    return sum(1 for line in code.split("\n") if line.strip())


def name_words(name: str) -> list[str]:
    """``Parser.parse_HTTPHeader`` -> ``['parse', 'http', 'header']`` (the last part of a qualified name)."""
    return [w.lower() for w in _NAME_PART.findall(name.rsplit(".", 1)[-1])]


def query_is_name(query: str, name: str) -> bool:
    """True when the query only spells out the function's name: ``Load the user config.`` for ``load_user_config``."""
    words = [w for w in re.findall(r"[a-z0-9]+", query.lower()) if w not in _FILLER]
    return words == name_words(name)


def shingles(tokens: list[str], size: int = 3) -> set[int]:
    """32-bit hashes of the ``size``-token windows (the whole sequence when it is shorter)."""
    if len(tokens) <= size:
        return {zlib.crc32("\x00".join(tokens).encode())}
    return {zlib.crc32("\x00".join(tokens[i : i + size]).encode()) for i in range(len(tokens) - size + 1)}


@functools.cache
def _permutations() -> object:
    """One set of permutations (datasketch's seed 1) shared by every signature: signatures stay
    comparable and equal between runs, and a MinHash is built without drawing 64 permutations."""
    from datasketch import MinHash  # 0.4 s to import (its async storage backends): only when deduplicating

    return MinHash(num_perm=_NUM_PERM, seed=1).permutations


def minhash(hashes: set[int] | np.ndarray) -> MinHash:
    """The 64-permutation MinHash signature of a non-empty set of 32-bit hashes (already hashed: no re-hash)."""
    from datasketch import MinHash  # as in _permutations: only when deduplicating

    sketch = MinHash(num_perm=_NUM_PERM, permutations=_permutations(), scheme="affine32", hashfunc=int)
    sketch.update_batch(hashes)
    return sketch


def jaccard(a: set[int], b: set[int]) -> float:
    """|a & b| / |a | b| (0.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def signature(sketch: MinHash) -> np.ndarray:
    """A MinHash's (64,) uint32 hash values: what another process needs to rebuild it (:func:`from_signature`)."""
    return sketch.hashvalues


def from_signature(values: np.ndarray) -> MinHash:
    """The MinHash whose hash values :func:`signature` returned, sharing the one set of permutations."""
    from datasketch import MinHash  # as in _permutations: only when deduplicating

    return MinHash(num_perm=_NUM_PERM, permutations=_permutations(), scheme="affine32", hashvalues=values)


class NearIndex:
    """Sets of shingles, found again by Jaccard similarity: MinHash LSH for candidates, then exact Jaccard.

    Example:
        >>> index = NearIndex(0.5)
        >>> index.add(shingles(code_tokens("def f(x):\\n    return x + 1")))
        0
        >>> index.find(shingles(code_tokens("def f(x):\\n    return x + 1  # one")))
        0
    """

    def __init__(self, threshold: float) -> None:
        """``threshold``: the Jaccard similarity from which :meth:`find` reports a match."""
        self.threshold = threshold
        from datasketch import MinHashLSH  # as in _permutations: only when deduplicating

        # Sorted uint32 arrays, not sets: ~0.5 KB instead of ~12 KB for a function of 120 shingles,
        # which is what kept 2.4 GB resident when mining every installed distribution.
        self._shingles: list[np.ndarray] = []
        self._lsh = MinHashLSH(num_perm=_NUM_PERM, params=(_BANDS, _NUM_PERM // _BANDS))

    def add(self, sh: set[int] | np.ndarray, sketch: MinHash | None = None) -> int:
        """Index a set or its :func:`sorted_shingles` (``sketch``: its :func:`minhash`, if known); returns its number."""
        index = len(self._shingles)
        self._shingles.append(sorted_shingles(sh))
        self._lsh.insert(index, sketch if sketch is not None else minhash(sh))
        return index

    def find(self, sh: set[int] | np.ndarray, sketch: MinHash | None = None) -> int | None:
        """The number of an indexed set at Jaccard >= threshold with ``sh`` (a set or sorted array), or None."""
        candidates = self._lsh.query(sketch if sketch is not None else minhash(sh))
        if not candidates:
            return None
        query = sorted_shingles(sh)
        for i in sorted(candidates):
            other = self._shingles[i]
            common = np.intersect1d(query, other, assume_unique=True).size
            if common / (query.size + other.size - common) >= self.threshold:
                return i
        return None


def sorted_shingles(sh: set[int] | np.ndarray) -> np.ndarray:
    """A set of shingle hashes as a sorted uint32 array (an array is taken as already sorted)."""
    if isinstance(sh, np.ndarray):
        return sh
    return np.sort(np.fromiter(sh, dtype=np.uint32, count=len(sh)))


class Deduplicator:
    """Keeps the first function of each group of exact or near duplicates, in the order offered.

    Example:
        >>> dedup = Deduplicator()
        >>> dedup.add("def f(x):\\n    return x + 1", "f")
        >>> dedup.add("def g(x):  return x + 1", "g")
        'duplicate'
    """

    def __init__(self, threshold: float = 0.85) -> None:
        """``threshold``: Jaccard of token 3-shingles from which a body is a near duplicate; above 1: off."""
        self.threshold = threshold
        self._keys: set[str] = set()
        self._near = NearIndex(threshold)

    def add(self, code: str, name: str | None = None) -> str | None:
        """Remember ``code`` and return None, or return ``"duplicate"``/``"near_duplicate"`` for a copy."""
        tokens = code_tokens(code, name)
        key = tokens_key(tokens)
        if key in self._keys:
            return "duplicate"
        self._keys.add(key)
        if self.threshold > 1:
            return None
        sh = shingles(tokens)
        sketch = minhash(sh)
        if self._near.find(sh, sketch) is not None:
            return "near_duplicate"
        self._near.add(sh, sketch)
        return None

    def add_fingerprint(self, fp: Fingerprint) -> str | None:
        """:meth:`add` of a function whose :func:`fingerprint` was taken already (on another process, say)."""
        if fp.key in self._keys:
            return "duplicate"
        self._keys.add(fp.key)
        if self.threshold > 1:
            return None
        sketch = from_signature(fp.signature)
        if self._near.find(fp.shingles, sketch) is not None:
            return "near_duplicate"
        self._near.add(fp.shingles, sketch)
        return None


@dataclass(frozen=True)
class Fingerprint:
    """What :class:`Deduplicator` compares of one function, taken apart from it: small and picklable."""

    key: str  # tokens_key of the name-masked tokens: equal keys are exact duplicates
    shingles: np.ndarray  # sorted uint32 hashes of the token 3-shingles
    signature: np.ndarray  # (64,) uint32: their MinHash's hash values


def fingerprint(code: str, name: str | None = None) -> Fingerprint:
    """The :class:`Fingerprint` of a function, exactly as :meth:`Deduplicator.add` would compare it."""
    tokens = code_tokens(code, name)
    sh = shingles(tokens)
    return Fingerprint(tokens_key(tokens), sorted_shingles(sh), signature(minhash(sh)))
