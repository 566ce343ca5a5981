"""Read and write BEIR-format retrieval sets: the evaluator's input and the miner's test output.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_text, iter_jsonl


@dataclass
class BeirData:
    """An in-memory BEIR set.

    Attributes:
        corpus: document id -> ``{"title": str, "text": str, ...metadata}``.
        queries: query id -> query text.
        qrels: query id -> {document id: relevance score}.
    """

    corpus: dict[str, dict] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def document_text(self, doc_id: str) -> str:
        """The text a model encodes for a document: the title (if any) on its own line, then the text."""
        doc = self.corpus[doc_id]
        title = (doc.get("title") or "").strip()
        return f"{title}\n{doc['text']}" if title else doc["text"]

    def fingerprint(self) -> str:
        """A hash of what is scored (queries, judgements, document texts), not of where the files lie."""
        h = hashlib.sha256()
        for qid in sorted(self.qrels):
            h.update(f"q\0{qid}\0{self.queries.get(qid, '')}\0".encode())
            h.update(json.dumps(sorted(self.qrels[qid].items())).encode())
        for doc_id in sorted(self.corpus):
            h.update(f"d\0{doc_id}\0{self.document_text(doc_id)}\0".encode())
        return h.hexdigest()[:16]

    def relevant(self) -> dict[str, set[str]]:
        """Query id -> ids of documents with a positive score; queries with none are left out."""
        out = {qid: {d for d, s in docs.items() if s > 0} for qid, docs in self.qrels.items()}
        return {qid: docs for qid, docs in out.items() if docs}


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    for lineno, row in iter_jsonl(path):
        missing = [k for k in required if k not in row]
        if missing:
            raise CodetuneError(f"{path}:{lineno}: missing field {missing[0]!r}")
        rows.append(row)
    return rows


def load_beir(folder: str | os.PathLike, split: str = "test") -> BeirData:
    """Load a BEIR folder, checking that every qrels row names a known query and document.

    Raises:
        CodetuneError: naming the file (and line) of any missing, malformed or inconsistent input.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CodetuneError(f"{folder}: BEIR folder not found")
    corpus = {}
    for row in _read_jsonl(folder / "corpus.jsonl", ("_id", "text")):
        extra = {k: v for k, v in row.items() if k != "_id"}
        extra.setdefault("title", "")
        corpus[str(row["_id"])] = extra
    queries = {str(r["_id"]): str(r["text"]) for r in _read_jsonl(folder / "queries.jsonl", ("_id", "text"))}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise CodetuneError(f"{qrels_path}: file not found (is --split {split!r} right?)")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise CodetuneError(f"{qrels_path}:1: expected the header 'query-id<TAB>corpus-id<TAB>score'")
        for lineno, row in enumerate(reader, 2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise CodetuneError(f"{qrels_path}:{lineno}: expected 3 tab-separated columns")
            qid, did, score = row[0].strip(), row[1].strip(), row[2].strip()
            if qid not in queries:
                raise CodetuneError(f"{qrels_path}:{lineno}: unknown query id {qid!r}")
            if did not in corpus:
                raise CodetuneError(f"{qrels_path}:{lineno}: unknown corpus id {did!r}")
            try:
                qrels.setdefault(qid, {})[did] = int(float(score))
            except ValueError:
                raise CodetuneError(f"{qrels_path}:{lineno}: score {score!r} is not a number") from None
    if not qrels:
        raise CodetuneError(f"{qrels_path}: no relevance judgements")
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


def write_beir(folder: str | os.PathLike, data: BeirData, split: str = "test") -> None:
    """Write ``data`` as a BEIR folder; each file is replaced atomically."""
    folder = Path(folder)
    corpus = "".join(json.dumps({"_id": i, **d}, ensure_ascii=False) + "\n" for i, d in data.corpus.items())
    queries = "".join(json.dumps({"_id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in data.queries.items())
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, docs in data.qrels.items() for d, s in docs.items()
    )
    atomic_write_text(folder / "corpus.jsonl", corpus)
    atomic_write_text(folder / "queries.jsonl", queries)
    atomic_write_text(folder / "qrels" / f"{split}.tsv", qrels)
