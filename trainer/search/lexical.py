"""Lexical search: BM25 (``bm25s``) over words split out of identifiers.

Code spells its words inside identifiers (``get_app_dir``, ``parseHTTPDate``), so a tokenizer
that splits on spaces never matches "app dir". :func:`tokens` splits every identifier on
snake_case and camelCase with :func:`trainer.data.queries.identifier_words` and keeps the whole
identifier too (a query that names ``getattr`` finds ``getattr``), lower case, without English
stopwords, with plurals folded (``files`` -> ``file``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainer.data.queries import identifier_words
from trainer.errors import CodetuneError

_WORD = re.compile(r"[A-Za-z0-9_]+")


def _bm25s():
    try:
        import bm25s
    except ImportError:
        raise CodetuneError("lexical search needs bm25s: pip install bm25s") from None
    return bm25s


def _stopwords() -> frozenset[str]:
    return frozenset(_bm25s().stopwords.STOPWORDS_EN)


def _fold(word: str) -> str:
    """A plural's singular, by the two rules that cover identifiers: ``entries`` -> ``entry``, ``files`` -> ``file``."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokens(text: str, stopwords: frozenset[str] | None = None) -> list[str]:
    """``"def get_app_dir(name): ..."`` -> ``["def", "get", "app", "dir", "get_app_dir", "name"]``."""
    stop = _stopwords() if stopwords is None else stopwords
    out = []
    for word in _WORD.findall(text):
        parts = identifier_words(word)
        if len(parts) > 1:
            parts.append(word.lower())
        out += [_fold(p) for p in parts if p not in stop]
    return out


class LexicalIndex:
    """A BM25 index over N documents; :meth:`scores` gives every document's score for one query."""

    def __init__(self, bm25, count: int):
        self.bm25 = bm25  # None for an empty corpus
        self.count = count

    @classmethod
    def build(cls, texts: Sequence[str], show_progress: bool = False) -> LexicalIndex:
        from tqdm.auto import tqdm

        stop = _stopwords()
        corpus = [tokens(t, stop) for t in tqdm(texts, desc="lexical", unit="fn", disable=not show_progress)]
        if not corpus:
            return cls(None, 0)
        bm25 = _bm25s().BM25()
        bm25.index(corpus, show_progress=show_progress)
        return cls(bm25, len(corpus))

    def save(self, folder: Path) -> None:
        if self.bm25 is not None:
            self.bm25.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, count: int) -> LexicalIndex:
        if count == 0:
            return cls(None, 0)
        bm25 = _bm25s().BM25.load(str(folder), mmap=True, show_progress=False)
        return cls(bm25, count)

    def scores(self, query: str) -> np.ndarray:
        """(N,) float32 BM25 scores; 0 for a document that shares no word with the query."""
        words = tokens(query)
        if self.bm25 is None or not words:
            return np.zeros(self.count, np.float32)
        return np.asarray(self.bm25.get_scores(words), dtype=np.float32)
