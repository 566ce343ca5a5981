"""Rows into contrastive batches: every row's hard negatives, the run's batch plan, the texts of one batch.

The one place where negatives are shaped for training: :mod:`trainer.data.negatives` mines them
into the rows; here each row gets exactly the number the run asks for, a batch's rows become
its queries and documents, and the documents are ordered for length-sorted slices. The batch
plan itself (no repeated text, grouping by length or source) is :func:`trainer.sampler.plan_batches`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from trainer.errors import CodetuneError
from trainer.rows import Rows, chunks, is_dataset, take
from trainer.sampler import plan_batches, scan_texts


class BatchSettings(Protocol):
    """What batching reads of the ``train`` section (:class:`trainer.loop.TrainConfig`)."""

    batch_size: int
    gradient_accumulation_steps: int
    hard_negatives: int | None
    epochs: float
    max_steps: int
    group_by_length: bool
    group_by_source: str | None
    source_share: float
    seed: int


def source_groups(rows: Rows, by: str | None) -> list[str] | None:
    """Per row, the file (or folder) its code came from, for :func:`plan_batches`; None when ``by`` is None.

    Rows without a ``path`` (users' own pairs) are each a group of their own, so they are placed
    at random; when no row has one, batches are random and None is returned. Rows of one file
    share one string: a million rows hold as many strings as there are files.
    """
    if by is None:
        return None
    groups: list[str] = []
    names: dict[str, str] = {}  # path -> its group
    for part in chunks(rows, ["path"]):
        for path in part["path"]:
            if path:
                if path not in names:
                    names[path] = path if by == "file" else str(Path(path).parent)
                groups.append(names[path])
            else:
                groups.append(f"\0row{len(groups)}")
    return groups if names else None


def most_negatives(rows: Rows) -> int:
    """The most hard negatives any row has."""
    return max((len(n or []) for part in chunks(rows, ["negatives"]) for n in part["negatives"]), default=0)


class TrainRows:
    """The training rows as batches draw them, every row with exactly ``h`` hard negatives.

    The rows stay where they are (a memory-mapped dataset: :mod:`trainer.rows`) and a batch's
    rows are read when it is trained on. What is held per row is what planning reads, a few
    numbers: 2 + 2h integers and a length, 24-72 MB for a million rows, not their gigabytes of
    text. A row short of negatives is topped up with other rows' positives (see :meth:`_fill`),
    held as those rows' indices.

    Texts are compared by hash (Python's ``hash``, as :func:`plan_batches` has always done): two
    different texts would have to collide in 64 bits to be taken for one.

    Attributes:
        rows: the dataset (or list of dicts) with ``query``, ``positive`` and optional ``negatives``.
        h: hard negatives per row.
        keys: (N, 2 + h) int64: hashes of each row's query, positive and h negatives (:func:`plan_batches`).
        lengths: (N,) int64: characters of each row's positive.
        fills: (N, h) int64: the row whose positive is negative j of row i; -1 where the row's own negative is.
        filled: how many negatives were filled in.

    Raises:
        CodetuneError: when ``h`` > 0 and the rows hold no more than ``h`` distinct documents.
    """

    def __init__(self, rows: Rows, h: int, seed: int):
        self.rows, self.h = rows, h
        self.keys, own, self.lengths = scan_texts(rows, h)
        self.fills = np.full((len(rows), h), -1, dtype=np.int64)
        self.filled = self._fill(own, seed) if h else 0
        if is_dataset(rows):  # the columns a batch reads: the others (path, docstring, ...) stay on disk
            self._texts = rows.select_columns([c for c in ("query", "positive", "negatives") if c in rows.column_names])
            self._positives = rows.select_columns(["positive"])
        else:
            self._texts = self._positives = rows

    def __len__(self) -> int:
        return len(self.keys)

    def _fill(self, own: np.ndarray, seed: int) -> int:
        """Top up each row with fewer than ``h`` negatives from the distinct positives, drawn with ``seed``.

        Every process must contribute the same number of documents to the gathered pool, and
        dropping rows whose mining window ran dry would waste their pairs; a random document is
        the in-batch kind of negative, so it is a safe filler. Rows are visited in order and draw
        from one generator, so the fillers are a function of the rows and ``seed`` alone.
        """
        h, positives = self.h, self.keys[:, 1]
        _, first = np.unique(positives, return_index=True)
        pool = np.sort(first)  # (P,): the first row of each distinct positive, in the order they first appear
        if len(pool) <= h:
            raise CodetuneError(f"train.hard_negatives={h}: needs more than {h} distinct documents, found {len(pool)}")
        rng = random.Random(seed)
        filled = 0
        for i in np.flatnonzero(own < h).tolist():
            negs = self.keys[i, 2 : 2 + own[i]].tolist()
            while len(negs) < h:
                row = pool.item(rng.randrange(len(pool)))
                other = positives.item(row)
                if other != positives.item(i) and other not in negs:
                    self.fills[i, len(negs)] = row
                    self.keys[i, 2 + len(negs)] = other
                    negs.append(other)
                    filled += 1
        return filled

    def take(self, indices: Sequence[int]) -> list[dict]:
        """Rows ``indices``, read now: ``query``, ``positive`` and exactly ``h`` ``negatives`` each."""
        indices = [int(i) for i in indices]
        fills = self.fills[indices]  # (b, h)
        fillers = iter(r["positive"] for r in take(self._positives, fills[fills >= 0]))  # row by row, slot by slot
        out = []
        for row in take(self._texts, indices):
            own = list(row.get("negatives") or [])[: self.h]
            out.append({**row, "negatives": own + [next(fillers) for _ in range(self.h - len(own))]})
        return out


def fill_negatives(rows: Rows, h: int, seed: int) -> tuple[list[dict], int]:
    """Every row with exactly ``h`` negatives, short rows topped up with random other positives.

    Returns:
        The rows (new dicts) and how many negatives were filled in.
    """
    planned = TrainRows(rows, h, seed)
    return planned.take(range(len(rows))), planned.filled


def with_negatives(rows: Rows, cfg: BatchSettings) -> tuple[TrainRows, BatchSettings, int]:
    """The rows planned with exactly ``cfg.hard_negatives`` negatives each (None: as many as the data has),
    the config with that number, and how many negatives were filled in (see :class:`TrainRows`)."""
    if cfg.hard_negatives is None:
        cfg = replace(cfg, hard_negatives=most_negatives(rows))
    planned = TrainRows(rows, cfg.hard_negatives, cfg.seed)
    return planned, cfg, planned.filled


def total_steps(cfg: BatchSettings, n_rows: int, world: int) -> int:
    """Optimizer steps of the run: ``max_steps``, or ``epochs`` worth of full batches."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = n_rows // (cfg.batch_size * world * cfg.gradient_accumulation_steps)
    return max(1, math.ceil(cfg.epochs * per_epoch))


def _batches(keys, lengths, global_batch: int, seed: int, groups=None, share: float = 1.0) -> Iterator[list[int]]:
    epoch = 0
    while True:
        plan = plan_batches(keys, global_batch, seed, epoch, lengths, groups=groups, group_share=share)
        if not plan:
            raise CodetuneError(
                f"train.batch_size: not enough distinct training pairs ({len(keys)}) for one batch of {global_batch}"
            )
        yield from plan
        epoch += 1


def run_batches(rows: TrainRows, cfg: BatchSettings, world: int) -> Iterator[list[int]]:
    """The run's global batches of row indices, epoch after epoch, exactly as training draws them."""
    lengths = rows.lengths if cfg.group_by_length and not cfg.group_by_source else None
    groups = source_groups(rows.rows, cfg.group_by_source)
    return _batches(rows.keys, lengths, cfg.batch_size * world, cfg.seed, groups, cfg.source_share)


def _plans_fill(rows: TrainRows, cfg: BatchSettings, world: int) -> bool:
    """Whether the run's batches last to its last step.

    Plans differ by epoch (and by grouping, which lays rows of a file side by side, whose
    negatives clash most): a check of one ungrouped plan passed batches that a later epoch of
    the real, grouped plan could not fill.
    """
    batches = run_batches(rows, cfg, world)
    try:
        for _ in range(total_steps(cfg, len(rows), world) * cfg.gradient_accumulation_steps):
            next(batches)
    except CodetuneError:  # an epoch whose plan holds no batch
        return False
    return True


def check_batches(rows: Rows, cfg: BatchSettings, world: int) -> None:
    """Fail before any expensive step when the rows cannot fill the run's contrastive batches.

    A batch may not hold a text twice (a repeated document would be its own false negative), so
    each row's query, positive and hard negatives must be new to it: with shared negatives the
    limit is far below the number of rows. Every epoch the run reaches is planned as training
    will plan it. The error names the largest batch that works.

    Raises:
        CodetuneError: naming the real cause and the largest ``train.batch_size`` that works.
    """
    rows, cfg, _ = with_negatives(rows, cfg)
    if _plans_fill(rows, cfg, world):
        return
    lo, hi = 0, cfg.batch_size  # largest per-process batch with a plan: lo works, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _plans_fill(rows, replace(cfg, batch_size=mid), world) else (lo, mid)
    cause = f"{len(rows)} rows"
    if cfg.hard_negatives:
        cause += f" whose {cfg.hard_negatives} hard negatives each overlap (no text may appear twice in a batch)"
    if cfg.group_by_source:
        cause += f", batched by {cfg.group_by_source},"
    per = f" per process ({world} processes)" if world > 1 else ""
    fix = f"the largest that works is train.batch_size={lo}{per}" if lo >= 2 else "add data"
    raise CodetuneError(f"train.batch_size: {cfg.batch_size}{per} is more than {cause} can fill; {fix}")


def batch_texts(rows: list[dict], h: int) -> tuple[list[str], list[str]]:
    """A batch's queries (b) and documents: b positives, then b*h hard negatives grouped by query."""
    docs = [r["positive"] for r in rows]
    if h:
        docs += [neg for r in rows for neg in r["negatives"][:h]]
    return [r["query"] for r in rows], docs


def length_order(docs: list[str], buckets: int) -> list[int]:
    """Document indices shortest first when ``buckets`` > 1 (length-sorted slices then pad less), else as given."""
    order = list(range(len(docs)))
    if buckets > 1:
        order.sort(key=lambda i: len(docs[i]))
    return order
