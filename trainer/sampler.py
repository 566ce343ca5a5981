"""Contrastive batches: no repeated text inside a batch, optional length or source grouping, resumable by index.

In-batch negatives assume every other document in the batch is wrong for a query; the same text
twice in one batch would be a false negative. Batches are planned for the whole (global) batch,
then sliced per process, so N processes of batch b see exactly what one process of N*b sees.

Grouping by source (rows of the same file side by side) makes the in-batch negatives the
functions that sit next to the positive: the ones a search inside one project has to tell apart.
Random batches mix unrelated modules, whose topics alone separate them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from trainer.rows import Rows, chunks


def plan_batches(
    keys: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    lengths: Sequence[int] | None = None,
    group_window: int = 64,
    groups: Sequence[str] | None = None,
    group_share: float = 1.0,
) -> list[list[int]]:
    """Order one epoch of row indices into full batches with no shared text.

    Args:
        keys: (N, K) int64: per row, hashes of every text it contributes (query, positive,
            negatives; :func:`text_keys`). A batch holds no hash twice.
        batch_size: rows per global contrastive batch.
        seed, epoch: the order is a pure function of these, which is what makes resume exact.
        lengths: per-row length; when given, rows of similar length share batches (less padding)
            inside windows of ``group_window`` batches, and the batch order is shuffled again.
        groups: per-row group (e.g. source file); when given, rows of one group are laid out
            together (groups and rows within them in random order), so a batch holds a few
            groups rather than a random sample. Not combined with ``lengths``.
        group_share: with ``groups``, the share of each batch laid out by group; the rest of
            the batch is drawn at random, so easy negatives stay beside the hard ones.

    Returns:
        Batches of exactly ``batch_size`` indices; rows that cannot fill a last batch are dropped.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(keys)))
    rng.shuffle(order)
    if groups is not None:
        members: dict[str, list[int]] = {}
        for i in order:
            members.setdefault(groups[i], []).append(i)
        names = sorted(members)
        rng.shuffle(names)
        grouped = [i for name in names for i in members[name]]
        per_batch = max(1, round(group_share * batch_size))
        if per_batch < batch_size:
            # every row once: a random share of them stays in group order, the rest is spread at random
            cut = round(len(grouped) * per_batch / batch_size)
            spread = sorted(rng.sample(range(len(grouped)), len(grouped) - cut))
            spread_set = set(spread)
            random_rows = [grouped[j] for j in spread]
            rng.shuffle(random_rows)
            grouped = [grouped[j] for j in range(len(grouped)) if j not in spread_set]
            rest = batch_size - per_batch
            order = []
            for n in range(0, max(len(grouped), 1), per_batch):
                order += grouped[n : n + per_batch] + random_rows[n // per_batch * rest : (n // per_batch + 1) * rest]
            order += random_rows[len(order) - len(grouped) :]
        else:
            order = grouped
    elif lengths is not None:
        window = batch_size * group_window
        order = [i for s in range(0, len(order), window) for i in sorted(order[s : s + window], key=lambda j: -lengths[j])]
    batches: list[list[int]] = []
    current: list[int] = []
    seen: set[int] = set()
    deferred: list[int] = []

    def take(idx: int) -> bool:
        texts = keys[idx].tolist()  # Python ints: a set of numpy scalars is several times slower
        if not seen.isdisjoint(texts):
            return False
        current.append(idx)
        seen.update(texts)
        return True

    for idx in order:
        if not take(idx):
            deferred.append(idx)
        if len(current) == batch_size:
            batches.append(current)
            current, seen = [], set()
            # Rows that clashed with the last batch go first into the next one.
            retry, deferred = deferred, []
            for d in retry:
                if len(current) == batch_size or not take(d):
                    deferred.append(d)
            if len(current) == batch_size:
                batches.append(current)
                current, seen = [], set()
    if lengths is not None:
        rng.shuffle(batches)
    return batches


def scan_texts(rows: Rows, negatives: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the rows' texts, a chunk at a time: what :class:`TrainRows` holds of them.

    Returns:
        keys: (N, 2 + negatives) int64 hashes of the query, positive and first ``negatives``
            negatives; a row with fewer repeats its query's hash there (a set of hashes is unchanged).
        own: (N,) int64: how many of those negatives the row has.
        lengths: (N,) int64: characters of the positive.
    """
    n = len(rows)
    keys = np.empty((n, 2 + negatives), dtype=np.int64)
    own, lengths = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    start = 0
    for part in chunks(rows, ["query", "positive", "negatives"]):
        end = start + len(part["query"])
        queries = [hash(q) for q in part["query"]]
        negs = [(ns or [])[:negatives] for ns in part["negatives"]]
        keys[start:end, 0] = queries
        keys[start:end, 1] = [hash(p) for p in part["positive"]]
        keys[start:end, 2:] = [[hash(t) for t in ns] + [q] * (negatives - len(ns)) for q, ns in zip(queries, negs)]
        own[start:end] = [len(ns) for ns in negs]
        lengths[start:end] = [len(p) for p in part["positive"]]
        start = end
    return keys, own, lengths


def text_keys(rows: Rows, negatives: int) -> np.ndarray:
    """(N, 2 + ``negatives``) int64: hashes of each row's query, positive and first ``negatives`` hard negatives."""
    return scan_texts(rows, negatives)[0]
