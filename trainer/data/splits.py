"""Train/test splits without leakage: a whole file (or folder) goes to one side, chosen by a hash.

Functions of one file share helpers, names and near-copies; a random split of functions would
put those on both sides and flatter the test score. Here a *group* (a file, or with
``group_by="folder"`` every file in one directory) goes to test when
``sha256(f"{seed}:{group}")`` maps below ``test_fraction``. The choice depends on nothing but the
group and the seed, so it is deterministic and stable as the tree grows: adding files never moves
an old one across.

The test side becomes a BEIR folder: its corpus holds *every* kept function of the test files,
with or without a docstring, so the documented ones compete with realistic neighbours. Ids are
hashes of ``path:line:name``; titles are empty (the path stays as metadata) so that a model is
scored on the code alone, and the query (the docstring) has been cut out of the document.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets

from trainer.data.beir import BeirData, write_beir
from trainer.data.formats import rows_dataset, write_jsonl
from trainer.data.languages import Function
from trainer.data.mining import MiningReport, MiningResult, Pair
from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_json

GROUP_BY = ("file", "folder")


@dataclass(frozen=True)
class SplitConfig:
    """How to hold out a test set."""

    test_fraction: float = 0.1  # of the groups (files or folders), not of the pairs
    seed: int = 0  # another seed draws another split
    group_by: str = "file"  # "file", or "folder": all files in one directory go together
    max_test_queries: int | None = None  # cap; groups past it (in hash order) go to train

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise CodetuneError(f"test_fraction: {self.test_fraction} is not in [0, 1)")
        if self.group_by not in GROUP_BY:
            raise CodetuneError(f"group_by: {self.group_by!r} is not one of {', '.join(GROUP_BY)}")
        if self.max_test_queries is not None and self.max_test_queries < 1:
            raise CodetuneError(f"max_test_queries: {self.max_test_queries} must be at least 1")


def group_of(path: str, group_by: str) -> str:
    """The unit that goes to one side whole: the file, or the directory holding it."""
    return posixpath.dirname(path) if group_by == "folder" else path


def group_score(group: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the group and the seed."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_test_groups(queries_per_group: Mapping[str, int], config: SplitConfig) -> set[str]:
    """The groups that go to test.

    A group goes to test when its score is below ``test_fraction``. When that picks none but
    there are at least two groups, the lowest-scoring one goes, so that a small tree still has a
    test set. With ``max_test_queries``, groups are taken in score order while they fit.
    """
    if config.test_fraction == 0 or not queries_per_group:
        return set()
    ranked = sorted(queries_per_group, key=lambda g: (group_score(g, config.seed), g))
    chosen = [g for g in ranked if group_score(g, config.seed) < config.test_fraction]
    if not chosen and len(ranked) >= 2:
        chosen = ranked[:1]
    if config.max_test_queries is None:
        return set(chosen)
    kept, total = set(), 0
    for group in chosen:
        if total + queries_per_group[group] <= config.max_test_queries:
            kept.add(group)
            total += queries_per_group[group]
    return kept


@dataclass
class MinedSplit:
    """Pairs for training; pairs and every kept function of the held-out files for testing."""

    train: list[Pair]
    test: list[Pair]
    test_documents: list[Function]

    def train_dataset(self) -> datasets.Dataset:
        """Training rows: ``query``, ``positive`` and metadata (see :func:`trainer.data.formats.rows_dataset`)."""
        return rows_dataset([p.to_row() for p in self.train])

    def test_beir(self) -> BeirData:
        """The held-out files as a BEIR set: one query per pair, the corpus of all their functions."""
        corpus = {
            document_id(fn): {
                "title": "",
                "text": fn.code,
                "path": fn.path,
                "line": fn.start_line,
                "name": fn.name,
                "language": fn.language,
            }
            for fn in self.test_documents
        }
        queries, qrels = {}, {}
        for pair in self.test:
            doc = document_id(pair.function)
            queries[f"q-{doc}"] = pair.query
            qrels[f"q-{doc}"] = {doc: 1}
        return BeirData(corpus=corpus, queries=queries, qrels=qrels)

    def summary(self) -> dict:
        """Counts for ``report.json``."""
        return {
            "train_pairs": len(self.train),
            "train_files": len({p.function.path for p in self.train}),
            "test_queries": len(self.test),
            "test_documents": len(self.test_documents),
            "test_files": len({fn.path for fn in self.test_documents}),
        }


def document_id(fn: Function) -> str:
    """A stable corpus id: a hash of ``path:line:name``."""
    return hashlib.sha1(f"{fn.path}:{fn.start_line}:{fn.name}".encode()).hexdigest()[:16]


def split_mined(result: MiningResult, config: SplitConfig) -> MinedSplit:
    """Split mined pairs by group; every file lands wholly on one side."""
    counts: Counter = Counter({group_of(fn.path, config.group_by): 0 for fn in result.documents})
    counts.update(group_of(p.function.path, config.group_by) for p in result.pairs)
    test_groups = choose_test_groups(counts, config)

    def in_test(fn: Function) -> bool:
        return group_of(fn.path, config.group_by) in test_groups

    return MinedSplit(
        train=[p for p in result.pairs if not in_test(p.function)],
        test=[p for p in result.pairs if in_test(p.function)],
        test_documents=[fn for fn in result.documents if in_test(fn)],
    )


def write_mined(out_dir: str | os.PathLike, split: MinedSplit, report: MiningReport, config: SplitConfig) -> dict:
    """Write ``train.jsonl``, ``test/`` (BEIR; only when the test side has queries) and ``report.json``.

    Returns:
        What ``report.json`` holds: the mining report and the split's settings and counts.
    """
    out = Path(out_dir)
    write_jsonl(out / "train.jsonl", (p.to_row() for p in split.train))
    if split.test:
        write_beir(out / "test", split.test_beir())
    summary = {"mining": report.to_dict(), "split": {**asdict(config), **split.summary()}}
    atomic_write_json(out / "report.json", summary)
    return summary


def split_rows(rows: datasets.Dataset, config: SplitConfig) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, test) rows of a user's dataset, grouped by the ``path`` column or, without one, by the positive text."""
    paths = rows["path"] if "path" in rows.column_names else [""] * len(rows)
    groups = [group_of(p, config.group_by) if p else f"text:{pos}" for p, pos in zip(paths, rows["positive"])]
    test_groups = choose_test_groups(Counter(groups), config)
    test_idx = [i for i, g in enumerate(groups) if g in test_groups]
    test_set = set(test_idx)
    return rows.select([i for i in range(len(rows)) if i not in test_set]), rows.select(test_idx)


def beir_from_rows(rows: datasets.Dataset) -> BeirData:
    """A BEIR set of rows: corpus = their positives and negatives, qrels = each query's positives."""
    data = BeirData()
    for row in rows:
        doc = _text_id(row["positive"])
        data.corpus.setdefault(doc, _row_document(row))
        for negative in row.get("negatives") or []:
            data.corpus.setdefault(_text_id(negative), {"title": "", "text": negative})
        qid = f"q-{_text_id(row['query'])}"
        data.queries[qid] = row["query"]
        data.qrels.setdefault(qid, {})[doc] = 1
    return data


def _row_document(row: dict) -> dict:
    meta = {k: row[k] for k in ("path", "line", "name", "language") if row.get(k)}
    return {"title": "", "text": row["positive"], **meta}


def _text_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]
