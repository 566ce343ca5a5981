"""Every source's training rows, labelled, split, and deduplicated across sources.

:func:`read_sources` turns the entries of ``data.source`` into *parts*, ``(label, rows)`` per
source, plus each source's held-out set:

- ``stdlib``: the cached standard-library set (label ``stdlib``);
- ``conala``: the shipped Stack Overflow questions (:mod:`trainer.data.conala`), none held out;
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
from trainer.data.conala import CONALA, conala_dataset, is_conala
from trainer.data.filters import Deduplicator, declared_name
from trainer.data.formats import load_pairs, rows_dataset
from trainer.data.languages import language_for_path
from trainer.data.mining import SourceTree, labelled_trees, mine
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
        ``data.source`` entry it came from), ``dedup`` (label -> ``duplicate`` and
        ``near_duplicate`` rows dropped from it: within the mined trees and across sources) and,
        when trees were mined, ``mining`` (``files`` read, ``seconds``, per label ``files`` and
        ``pairs`` before the split).
    """
    split = config.split_config()
    hold_out = config.eval is None and split.test_fraction > 0
    parts: list[Part] = []
    origin: dict[str, str] = {}  # label -> data.source entry
    held_out: list[BeirData | Path] = []
    trees, tree_entries, tree_at = [], [], 0
    groups = 0  # sets of rows deduplicated on their own: each stdlib or dataset entry, all the trees together
    for source in config.sources():
        if is_stdlib(source):
            train, test_dir = stdlib_dataset(config.mining_config(), split)
            parts.append((_unique("stdlib", origin, source), train))
            if hold_out and test_dir is not None:
                held_out.append(test_dir)
        elif is_conala(source):
            parts.append((_unique(CONALA, origin, source), conala_dataset()))  # general questions: none held out
        elif not is_package(source) and is_dataset(source):
            rows = load_pairs(source, config.query_column, config.positive_column, config.negatives_column, config.eval_split)
            if hold_out:
                rows, test = split_rows(rows, split)
                if len(test):
                    held_out.append(beir_from_rows(test))
            parts.append((_unique(Path(source).name, origin, source), rows))
        else:
            groups -= bool(trees)
            tree_at = tree_at if trees else len(parts)  # the mined parts go where the first tree was given
            found = trees_of(source, config.exclude_projects)
            trees += found
            tree_entries += [source] * len(found)
        groups += 1
    report: dict = {"labels": origin}
    dedup: dict[str, Counter] = {}
    if trees:
        mined, test, dedup, report["mining"] = _mine(trees, tree_entries, config, origin)
        parts[tree_at:tree_at] = mined
        if hold_out and test is not None:
            held_out.append(test)
    if groups > 1:
        parts = dedup_across(parts, config.mining_config().near_duplicate_threshold, dedup)
    report["dedup"] = {label: dict(counts) for label, counts in dedup.items() if counts}
    return parts, held_out, report


def _mine(
    trees: list[SourceTree], entries: list[str], config: DataConfig, origin: dict[str, str]
) -> tuple[list[Part], BeirData | None, dict[str, Counter], dict]:
    """Trees mined together (so duplicates across them go before the split), then split by file.

    Returns:
        (a part per source with training rows, the held-out set or None, label -> duplicates
        dropped, the ``mining`` report); each source's label is recorded in ``origin``.
    """
    result = mine(trees, config.mining_config())
    split = split_mined(result, config.split_config())
    entry_of: dict[str, str] = {}
    for tree, entry in zip(labelled_trees(trees), entries):
        entry_of.setdefault(tree.source, entry)
    label = {name: _unique(name, origin, entry_of.get(name, "")) for name in result.report.sources}
    rows: dict[str, list[dict]] = {name: [] for name in result.report.sources}  # the trees' order
    for pair in split.train:
        rows[result.source_of[pair.function.path]].append(pair.to_row())
    parts = [(label[name], rows_dataset(r)) for name, r in rows.items() if r]
    counts = result.report.sources
    dedup = {label[n]: Counter({k: c[k] for k in ("duplicate", "near_duplicate") if c[k]}) for n, c in counts.items()}
    mining = {
        "files": sum(result.report.files.values()),
        "seconds": result.report.seconds,
        "sources": {label[n]: {"files": c["files"], "pairs": c["pairs"]} for n, c in counts.items()},
    }
    return parts, split.test_beir() if split.test else None, dedup, mining


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
