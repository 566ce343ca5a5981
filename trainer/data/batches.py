"""Rows into contrastive batches: every row's hard negatives, the run's batch plan, the texts of one batch.

The one place where negatives are shaped for training: :mod:`trainer.data.negatives` mines them
into the rows; here each row gets exactly the number the run asks for, a batch's rows become
its queries and documents, and the documents are ordered for length-sorted slices. The batch
plan itself (no repeated text, grouping by length or source) is :func:`trainer.sampler.plan_batches`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from trainer.errors import CodetuneError
from trainer.sampler import plan_batches, text_keys


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


def source_groups(rows: list[dict], by: str | None) -> list[str] | None:
    """Per row, the file (or folder) its code came from, for :func:`plan_batches`; None when ``by`` is None.

    Rows without a ``path`` (users' own pairs) are each a group of their own, so they are placed
    at random; when no row has one, batches are random and None is returned.
    """
    if by is None or not any(r.get("path") for r in rows):
        return None
    return [
        (r["path"] if by == "file" else str(Path(r["path"]).parent)) if r.get("path") else f"\0row{i}"
        for i, r in enumerate(rows)
    ]


def fill_negatives(rows: list[dict], h: int, seed: int) -> tuple[list[dict], int]:
    """Give every row exactly ``h`` negatives, topping up short rows with random other positives.

    Every process must contribute the same number of documents to the gathered pool, and
    dropping rows whose mining window ran dry would waste their pairs; a random document is
    the in-batch kind of negative, so it is a safe filler.

    Returns:
        The rows (new dicts) and how many negatives were filled in.
    """
    pool = list(dict.fromkeys(r["positive"] for r in rows))
    if len(pool) <= h:
        raise CodetuneError(f"train.hard_negatives={h}: needs more than {h} distinct documents, found {len(pool)}")
    rng = random.Random(seed)
    out, filled = [], 0
    for row in rows:
        negs = list(row.get("negatives") or [])[:h]
        while len(negs) < h:
            other = pool[rng.randrange(len(pool))]
            if other != row["positive"] and other not in negs:
                negs.append(other)
                filled += 1
        out.append({**row, "negatives": negs})
    return out, filled


def with_negatives(rows: list[dict], cfg: BatchSettings) -> tuple[list[dict], BatchSettings, int]:
    """Rows with exactly ``cfg.hard_negatives`` negatives each (None: as many as the data has), the
    config with that number, and how many negatives were filled in (see :func:`fill_negatives`)."""
    if cfg.hard_negatives is None:
        cfg = replace(cfg, hard_negatives=max((len(r.get("negatives") or []) for r in rows), default=0))
    if cfg.hard_negatives == 0:
        return rows, cfg, 0
    rows, filled = fill_negatives(rows, cfg.hard_negatives, cfg.seed)
    return rows, cfg, filled


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


def run_batches(rows: list[dict], cfg: BatchSettings, world: int) -> Iterator[list[int]]:
    """The run's global batches of row indices, epoch after epoch, exactly as training draws them."""
    keys = text_keys(rows, cfg.hard_negatives)
    lengths = [len(r["positive"]) for r in rows] if cfg.group_by_length and not cfg.group_by_source else None
    groups = source_groups(rows, cfg.group_by_source)
    return _batches(keys, lengths, cfg.batch_size * world, cfg.seed, groups, cfg.source_share)


def _plans_fill(rows: list[dict], cfg: BatchSettings, world: int) -> bool:
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


def check_batches(rows: list[dict], cfg: BatchSettings, world: int) -> None:
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
