"""Lexical search: BM25 (``bm25s``) over words split out of identifiers.

Code spells its words inside identifiers (``get_app_dir``, ``parseHTTPDate``), so a tokenizer
that splits on spaces never matches "app dir". :func:`tokens` splits every identifier on
snake_case and camelCase with :func:`trainer.data.queries.identifier_words` and keeps the whole
identifier too (a query that names ``getattr`` finds ``getattr``), lower case, without English
stopwords, with plurals folded (``files`` -> ``file``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.queries import identifier_words
from trainer.errors import CodetuneError

_WORD = re.compile(r"[A-Za-z0-9_]+")


def _bm25s():
    try:
        import bm25s  # here: ~0.2 s to import, and dense-only queries never need it
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


TOKENS_VERSION = 1  # bump when tokens() changes: an index's stored token ids are then made again, not reused
TOKEN_IDS, TOKEN_OFFSETS, VOCAB = "token_ids.npy", "token_offsets.npy", "vocab.json"  # beside bm25s' files


@dataclass
class TokenIds:
    """Every document's tokens as ids into one vocabulary: document i is ``vocab[ids[offsets[i]:offsets[i + 1]]]``.

    Attributes:
        vocab: the distinct words, each once.
        ids: (T,) int32, all documents' token ids one after another.
        offsets: (N + 1,) int64, where each document's ids start (and the last one ends).
    """

    vocab: list[str]
    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def documents(self) -> list[list[int]]:
        """Each document's ids as a list, as ``bm25s`` indexes them."""
        flat = self.ids.tolist()
        return [flat[a:b] for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist())]

    @classmethod
    def assemble(
        cls,
        texts: Sequence[str | None],
        previous: TokenIds | None = None,
        reused: Sequence[int] | None = None,
        show_progress: bool = False,
    ) -> TokenIds:
        """Document i's ids: ``previous``'s document ``reused[i]`` when that is >= 0, else ``texts[i]`` tokenized.

        Only the new texts are tokenized (a text whose document is reused may be None), and the
        vocabulary keeps just the words some document still uses.
        """
        from tqdm.auto import tqdm  # here: only indexing shows progress; queries skip its import

        reused = [-1] * len(texts) if reused is None else reused
        word_id = {w: i for i, w in enumerate(previous.vocab)} if previous is not None else {}
        stop = _stopwords()
        fresh = {}
        for i in tqdm([i for i, r in enumerate(reused) if r < 0], desc="lexical", unit="fn", disable=not show_progress):
            fresh[i] = np.array([word_id.setdefault(w, len(word_id)) for w in tokens(texts[i], stop)], np.int32)
        pieces = [previous.ids[previous.offsets[r] : previous.offsets[r + 1]] if r >= 0 else fresh[i] for i, r in enumerate(reused)]
        lengths = np.array([len(p) for p in pieces], np.int64)
        ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
        vocab = list(word_id)
        used = np.bincount(ids, minlength=len(vocab)) > 0
        if not used.all():  # words only removed documents had
            ids = (np.cumsum(used) - 1)[ids].astype(np.int32)
            vocab = [w for w, u in zip(vocab, used.tolist()) if u]
        return cls(vocab, ids.astype(np.int32), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def save(self, folder: Path) -> None:
        np.save(folder / TOKEN_IDS, self.ids)
        np.save(folder / TOKEN_OFFSETS, self.offsets)
        (folder / VOCAB).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> TokenIds:
        """Raises OSError or ValueError when the files are missing or unreadable."""
        vocab = json.loads((folder / VOCAB).read_text(encoding="utf-8"))
        ids, offsets = np.load(folder / TOKEN_IDS), np.load(folder / TOKEN_OFFSETS)
        if offsets[-1] != len(ids) or (len(ids) and int(ids.max()) >= len(vocab)):
            raise ValueError(f"{folder}: token ids disagree with their vocabulary")
        return cls(vocab, ids, offsets)


class LexicalIndex:
    """A BM25 index over N documents; :meth:`scores` gives every document's score for one query.

    ``token_ids`` holds what it was built from, so that an update tokenizes only new documents.
    """

    def __init__(self, bm25, count: int, token_ids: TokenIds | None = None):
        self.bm25 = bm25  # None for an empty corpus
        self.count = count
        self.token_ids = token_ids

    @classmethod
    def build(cls, texts: Sequence[str], show_progress: bool = False) -> LexicalIndex:
        """Tokenize every text and index them."""
        return cls.from_token_ids(TokenIds.assemble(texts, show_progress=show_progress), show_progress)

    @classmethod
    def from_token_ids(cls, token_ids: TokenIds, show_progress: bool = False) -> LexicalIndex:
        if not len(token_ids):
            return cls(None, 0, token_ids)
        bm25 = _bm25s().BM25()
        vocab = {w: i for i, w in enumerate(token_ids.vocab)}
        bm25.index((token_ids.documents(), vocab), show_progress=show_progress)
        return cls(bm25, len(token_ids), token_ids)

    def save(self, folder: Path) -> None:
        """``folder`` holds bm25s' files and, beside them, the token ids."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.bm25 is not None:
            self.bm25.save(str(folder), show_progress=False)
        if self.token_ids is not None:
            self.token_ids.save(folder)

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
