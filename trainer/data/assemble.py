"""Every source's training rows, labelled, split, and deduplicated across sources.

:func:`read_sources` turns the entries of ``data.source`` into *parts*, ``(label, rows)`` per
source, plus each source's held-out set:

- ``stdlib``: the cached standard-library set (label ``stdlib``);
- a dataset file or folder: its rows, split on their own (label: the file's name);
- ``pkg:``, git and folder entries: mined *together* (:func:`trainer.data.mining.mine`), so that
  exact and near duplicates across all of them are dropped before the split, then split by file;
  one part per project or tree (:mod:`trainer.data.sources`).

When more than one kind is given, the training rows of all parts go through one more
:class:`~trainer.data.filters.Deduplicator` in the order given, so a body both in the standard
library and in a user's file is trained on once. Copies that reach a held-out set are left to
:mod:`~trainer.data.decontaminate`. Both drops are counted per source in the report.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import datasets

from trainer.data.beir import BeirData, load_beir
from trainer.data.filters import Deduplicator, declared_name
from trainer.data.formats import load_pairs, rows_dataset
from trainer.data.languages import language_for_path
from trainer.data.mining import mine
from trainer.data.sources import is_package, trees_of
from trainer.data.splits import beir_from_rows, split_mined, split_rows
from trainer.data.stdlib import is_stdlib, stdlib_dataset

if TYPE_CHECKING:
    from trainer.data import DataConfig

Part = tuple[str, datasets.Dataset]  # (source label, training rows)


def read_sources(config: DataConfig) -> tuple[list[Part], list[BeirData | Path], dict]:
    """Training rows per source, the held-out sets (a BEIR set, or the stdlib cache's folder), and a report.

    Returns:
        (parts, held-out sets, report) where the report holds ``labels`` (label -> the
        ``data.source`` entry it came from) and ``dedup`` (label -> ``duplicate`` and
        ``near_duplicate`` rows dropped from it: within the mined trees and across sources).
    """
    split = config.split_config()
    hold_out = config.eval is None and split.test_fraction > 0
    parts: list[Part] = []
    origin: dict[str, str] = {}
    held_out: list[BeirData | Path] = []
    trees, tree_entries = [], []
    tree_at = 0
    for source in config.sources():
        if is_stdlib(source):
            train, test_dir = stdlib_dataset(config.mining_config(), split)
            parts.append((_unique("stdlib", origin, source), train))
            if hold_out and test_dir is not None:
                held_out.append(test_dir)
        elif not is_package(source) and is_dataset(source):
            rows = load_pairs(source, config.query_column, config.positive_column, config.negatives_column, config.eval_split)
            if hold_out:
                rows, test = split_rows(rows, split)
                if len(test):
                    held_out.append(beir_from_rows(test))
            parts.append((_unique(Path(source).name, origin, source), rows))
        else:
            tree_at = len(parts) if not trees else tree_at  # mined parts go where the first tree was given
            found = trees_of(source, config.exclude_projects)
            trees += found
            tree_entries += [source] * len(found)
    dedup: dict[str, Counter] = {}
    if trees:  # mined together, so that duplicates across the trees are removed too
        result = mine(trees, config.mining_config())
        mined = split_mined(result, split)
        by_source: dict[str, list[dict]] = {}
        for name in result.report.sources:  # the trees' order
            by_source[name] = []
        for pair in mined.train:
            by_source[result.source_of[pair.function.path]].append(pair.to_row())
        entry_of = _entries(trees, tree_entries)
        mined_parts = [(_unique(name, origin, entry_of.get(name, "")), rows_dataset(rows)) for name, rows in by_source.items() if rows]
        parts[tree_at:tree_at] = mined_parts
        for name, counts in result.report.sources.items():
            dedup[name] = Counter({k: counts[k] for k in ("duplicate", "near_duplicate") if counts[k]})
        if hold_out and mined.test:
            held_out.append(mined.test_beir())
    kinds = int(bool(trees)) + sum(1 for s in config.sources() if is_stdlib(s) or (not is_package(s) and is_dataset(s)))
    if kinds > 1:
        parts = dedup_across(parts, config.mining_config().near_duplicate_threshold, dedup)
    report = {"labels": origin, "dedup": {k: dict(v) for k, v in dedup.items() if v}}
    return parts, held_out, report


def dedup_across(parts: list[Part], threshold: float, counts: dict[str, Counter]) -> list[Part]:
    """The parts less rows whose positive copies (exactly or nearly) one seen before, counted into ``counts``."""
    dedup = Deduplicator(threshold)
    out = []
    for label, rows in parts:
        names = rows["name"] if "name" in rows.column_names else [None] * len(rows)
        # a dataset's rows may name no function: mask the name the code declares, as mining masks its own
        verdicts = [dedup.add(code, name or declared_name(code)) for code, name in zip(rows["positive"], names)]
        dropped = Counter(v for v in verdicts if v)
        if dropped:
            counts.setdefault(label, Counter()).update(dropped)
            rows = rows.select([i for i, v in enumerate(verdicts) if v is None])
        out.append((label, rows))
    return out


def is_dataset(source: str) -> bool:
    """A dataset file or folder, as opposed to a source tree to mine."""
    path = Path(source)
    if path.is_file():
        return language_for_path(path) is None
    markers = ("corpus.jsonl", "dataset_info.json", "dataset_dict.json")
    return any((path / marker).is_file() for marker in markers)


def concatenate(parts: list[datasets.Dataset]) -> datasets.Dataset:
    """One dataset of several, giving ``negatives: []`` to parts without the column when others have it."""
    parts = [p for p in parts if len(p)] or parts[:1]
    if any("negatives" in p.column_names for p in parts):
        feature = datasets.List(datasets.Value("string"))
        parts = [
            p if "negatives" in p.column_names else p.add_column("negatives", [[]] * len(p), feature=feature)
            for p in parts
        ]
        parts = [p.select_columns(parts[0].column_names) for p in parts]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def merge(sets: list[BeirData | Path]) -> BeirData:
    """One BEIR set of several; ids get a per-source prefix so that two sources cannot collide."""
    loaded = [load_beir(s) if isinstance(s, Path) else s for s in sets]
    if len(loaded) == 1:
        return loaded[0]
    merged = BeirData()
    for i, data in enumerate(loaded):
        merged.corpus.update({f"s{i}-{d}": doc for d, doc in data.corpus.items()})
        merged.queries.update({f"s{i}-{q}": text for q, text in data.queries.items()})
        merged.qrels.update({f"s{i}-{q}": {f"s{i}-{d}": s for d, s in docs.items()} for q, docs in data.qrels.items()})
    return merged


def _unique(label: str, taken: dict[str, str], entry: str) -> str:
    """``label``, or ``label-2``, ... when another source holds it; recorded in ``taken`` with its entry."""
    out, n = label, 1
    while out in taken:
        n += 1
        out = f"{label}-{n}"
    taken[out] = entry
    return out


def _entries(trees: list, entries: list[str]) -> dict[str, str]:
    """Source name -> the ``data.source`` entry its (first) tree came from."""
    out: dict[str, str] = {}
    for tree, entry in zip(trees, entries):
        out.setdefault(tree.source or tree.label or Path(tree.root).expanduser().resolve().name, entry)
    return out
