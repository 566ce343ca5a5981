"""Drop training rows that would leak an evaluation set into training.

A row is dropped when

- ``query``: its query equals an evaluation query, or the docstring summary of an evaluation
  document, compared case- and whitespace-insensitively (a benchmark's query planted as some
  library's docstring summary; a set that scores functions as written shows the model their
  docstrings, and a set's other functions are its queries under another draw);
- ``document``: its positive has the same tokens as an evaluation document, whatever the
  whitespace and line breaks, with the function's own name masked (a renamed copy is a copy);
- ``near_document``: the token 3-shingles of the two are at Jaccard >= the threshold (candidates
  from MinHash LSH, then checked exactly: :class:`~trainer.data.filters.NearIndex`).

Evaluation documents come as their sets hold them: often whole functions *with* their docstring
or doc comment, sometimes flattened onto one line (``def f(x):     \"\"\"Doc.\"\"\"     return x``),
while a mined positive has its docstring cut out. So each document is indexed twice: as written,
and with its docstring (the string right after a Python signature) and leading comments removed.
Tokens ignore whitespace (:func:`~trainer.data.filters.code_tokens`), which undoes the flattening.

``data.decontaminate`` names the sets: BEIR folders, and the sets codetune is judged by, by name
(``bench`` for all of them, or ``ood:networkx``, ``real:staqc``, ...: :mod:`trainer.data.benchmarks`).
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer.data.beir import BeirData
from trainer.data.benchmarks import BENCH, SET_NAMES, content_key, eval_set, is_set_name, missing_package, set_names
from trainer.data.filters import (
    Fingerprint,
    NearIndex,
    code_tokens,
    declared_name,
    fingerprint,
    from_signature,
    minhash,
    shingles,
    tokens_key,
)
from trainer.data.mining import docstring_summary
from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_with, cache_root, iter_jsonl

if TYPE_CHECKING:
    import os

    import datasets

REASONS = ("query", "document", "near_document")
# Bump when an evaluation set is indexed differently (queries, document forms), so that cached index parts are not reused.
INDEX_VERSION = 1

_STRING = r"[rRbBuUfF]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*')"
# A Python signature (up to the first ")" followed by an optional return annotation and ":"), then a string.
_PY_DOCSTRING = re.compile(r"(\bdef\s+\w+\s*\(.*?\)\s*(?:->[^:]*)?:)\s*" + _STRING, re.DOTALL)
_NO_TOKENS = tokens_key([])  # the key of a text with no code in it
_LINE_STARTS_STRING = re.compile(r"^[ \t]*[rRbBuUfF]{0,2}[\"']", re.MULTILINE)
_LEADING_COMMENTS = re.compile(r"\A\s*(?:(?://[^\n]*|/\*[\s\S]*?\*/|#(?!\[)[^\n]*)\s*)+")


def load_eval_texts(folder: str | os.PathLike) -> BeirData:
    """The corpus and every query of a BEIR folder, whatever its qrels (all of them are checked against).

    Raises:
        CodetuneError: naming ``data.decontaminate`` and the file of a missing folder or field.
    """
    from trainer.data.beir import BeirData

    folder = Path(folder).expanduser()
    if not (folder / "corpus.jsonl").is_file():
        raise CodetuneError(f"data.decontaminate: {folder}: no corpus.jsonl (a BEIR folder is expected)")
    data = BeirData()
    for name, target in (("corpus.jsonl", data.corpus), ("queries.jsonl", data.queries)):
        if not (folder / name).is_file():
            continue
        for lineno, row in iter_jsonl(folder / name):
            if "_id" not in row or "text" not in row:
                raise CodetuneError(f"data.decontaminate: {folder / name}:{lineno}: needs '_id' and 'text'")
            target[str(row["_id"])] = {"text": str(row["text"])} if name == "corpus.jsonl" else str(row["text"])
    return data


def load_sets(entries: list[str]) -> list[BeirData | IndexPart]:
    """The sets ``data.decontaminate`` names: bench sets by name (``bench``: all; their cached
    :class:`IndexPart`) and BEIR folders.

    Raises:
        CodetuneError: naming ``data.decontaminate`` and the entry that is neither, or a named set
            whose package is missing.
    """
    check_entries(entries)
    named = [cached_index_part(name) for name in set_names([e for e in entries if is_set_name(e)])]
    return [*named, *(load_eval_texts(e) for e in entries if not is_set_name(e))]


def cached_index_part(name: str) -> IndexPart:
    """The :class:`IndexPart` of bench set ``name``, from ``$CODETUNE_CACHE/bench-sets/`` once it was built there."""
    path = cache_root() / "bench-sets" / f"{content_key(name)}.index-{INDEX_VERSION}.npz"
    if path.is_file():
        return IndexPart.load(path)
    part = index_part(eval_set(name))
    part.save(path)
    return part


def check_entries(entries: list[str]) -> None:
    """Fail on an entry of ``data.decontaminate`` that is neither a bench set name nor a BEIR folder, before any work."""
    for entry in entries:
        if is_set_name(entry):
            missing = missing_package(entry) if entry != BENCH else None
            if missing:
                raise CodetuneError(f"data.decontaminate: {entry}: needs the {missing} package installed")
        elif not Path(entry).expanduser().is_dir():
            names = ", ".join((BENCH, *SET_NAMES))
            raise CodetuneError(f"data.decontaminate: {entry!r} is neither a bench set ({names}) nor a BEIR folder")
        elif not (Path(entry).expanduser() / "corpus.jsonl").is_file():
            raise CodetuneError(f"data.decontaminate: {entry}: not a BEIR folder (no corpus.jsonl)")


def normalise_query(text: str) -> str:
    """Case-folded, whitespace collapsed: ``' Parse  a PORT '`` -> ``'parse a port'``."""
    return " ".join(text.casefold().split())


def without_docs(code: str) -> str:
    """``code`` less its leading comments and the docstring after a Python signature."""
    return _PY_DOCSTRING.sub(r"\1 ", _LEADING_COMMENTS.sub("", code), count=1)


def docstring_queries(code: str) -> set[str]:
    """The normalised docstring summary of every Python function in ``code`` (dedented first; none when it does not parse)."""
    if not _LINE_STARTS_STRING.search(code):  # no line starts with a string: no docstring, skip the parse
        return set()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old escape sequences warn on every parse
            body = ast.parse(textwrap.dedent(code)).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    out = set()
    while body:  # statements only, into classes and functions: expressions hold no docstring
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            out.add(normalise_query(docstring_summary(ast.get_docstring(node))))
        body += [n for field in ("body", "orelse", "handlers", "finalbody") for n in getattr(node, field, [])]
    return out - {""}


def body_tokens(code: str) -> list[str]:
    """Tokens of a function with its own declared name masked (see :func:`~trainer.data.filters.code_tokens`)."""
    return code_tokens(code, declared_name(code))


@dataclass
class IndexPart:
    """What :class:`EvalIndex` holds of one evaluation set: computed once, cached as plain arrays.

    Attributes:
        documents: how many documents the set has.
        queries: its queries and its documents' docstring summaries, normalised.
        keys: :func:`~trainer.data.filters.tokens_key` of each distinct document form (as given,
            and without docstring), its own name masked.
        shingles: per key, the sorted uint32 hashes of its token 3-shingles.
        signatures: (len(keys), 64) uint32, their MinHash hash values.
    """

    documents: int
    queries: list[str]
    keys: list[str]
    shingles: list[np.ndarray]
    signatures: np.ndarray

    def save(self, path: Path) -> None:
        """One ``.npz`` (no pickle), written atomically."""
        meta = json.dumps({"documents": self.documents, "queries": self.queries, "keys": self.keys}).encode()
        offsets = np.cumsum([0, *(len(sh) for sh in self.shingles)])
        flat = np.concatenate(self.shingles) if self.shingles else np.zeros(0, np.uint32)
        arrays = {
            "meta": np.frombuffer(meta, np.uint8),
            "shingles": flat,
            "offsets": offsets,
            "signatures": self.signatures,
        }
        atomic_write_with(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: Path) -> IndexPart:
        """The part :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            flat, offsets = z["shingles"], z["offsets"]
            shingles = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
            return cls(meta["documents"], meta["queries"], meta["keys"], shingles, z["signatures"])


def index_part(data: BeirData) -> IndexPart:
    """The :class:`IndexPart` of one evaluation set."""
    queries = {normalise_query(q) for q in data.queries.values()}
    prints: dict[str, Fingerprint] = {}
    for doc in data.corpus.values():
        queries |= docstring_queries(doc["text"])
        for text in (doc["text"], without_docs(doc["text"])):
            fp = fingerprint(text, declared_name(text))
            if fp.key != _NO_TOKENS:
                prints.setdefault(fp.key, fp)
    signatures = np.stack([fp.signature for fp in prints.values()]) if prints else np.zeros((0, 64), np.uint32)
    return IndexPart(
        len(data.corpus), sorted(queries), list(prints), [fp.shingles for fp in prints.values()], signatures
    )


class EvalIndex:
    """The queries and documents of evaluation sets, to look training rows up against."""

    def __init__(self, sets: Iterable[BeirData | IndexPart], threshold: float = 0.85) -> None:
        """``sets``: each as loaded, or its cached :class:`IndexPart`. ``threshold``: Jaccard of token 3-shingles
        from which a positive near-duplicates a document; above 1: off."""
        self.threshold = threshold
        self.queries: set[str] = set()
        self.keys: set[str] = set()
        self._near = NearIndex(threshold)
        self.documents = 0
        for data in sets:
            part = data if isinstance(data, IndexPart) else index_part(data)
            self.documents += part.documents
            self.queries.update(part.queries)
            for key, sh, values in zip(part.keys, part.shingles, part.signatures):
                if key in self.keys:  # the same document in another set or form: indexed
                    continue
                self.keys.add(key)
                if threshold <= 1:
                    self._near.add(sh, from_signature(values))

    def reason(self, query: str, positive: str) -> str | None:
        """Why a row leaks (one of :data:`REASONS`), or None for a clean row."""
        if normalise_query(query) in self.queries:
            return "query"
        tokens = body_tokens(positive)
        if tokens_key(tokens) in self.keys:
            return "document"
        if self.threshold <= 1:
            sh = shingles(tokens)
            if self._near.find(sh, minhash(sh)) is not None:
                return "near_document"
        return None


def decontaminate(
    parts: list[tuple[str, datasets.Dataset]], sets: Iterable[BeirData | IndexPart], threshold: float = 0.85
) -> tuple[list[tuple[str, datasets.Dataset]], dict]:
    """Each source's rows less those that leak one of ``sets``.

    Args:
        parts: (source label, rows with ``query`` and ``positive``) per source.
        sets: the evaluation sets (held-out split, ``data.decontaminate`` folders and bench sets), or their
            :class:`IndexPart`.
        threshold: see :class:`EvalIndex`.

    Returns:
        The parts with the leaking rows dropped, and a report: rows dropped per reason
        (``query``, ``document``, ``near_document``), per source, and the documents and queries
        checked against.
    """
    index = EvalIndex(sets, threshold)
    totals: Counter = Counter()
    by_source: dict[str, dict[str, int]] = {}
    out = []
    for label, rows in parts:
        reasons = [index.reason(q, p) for q, p in zip(rows["query"], rows["positive"])]
        counts = Counter(r for r in reasons if r)
        if counts:
            by_source[label] = dict(counts)
            totals.update(counts)
            rows = rows.select([i for i, r in enumerate(reasons) if r is None])
        out.append((label, rows))
    report = {
        **{reason: totals[reason] for reason in REASONS},
        "by_source": by_source,
        "eval_documents": index.documents,
        "eval_queries": len(index.queries),
    }
    return out, report
