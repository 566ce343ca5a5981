"""The run's data, prepared once on the main process and shared with every rank.

The main process reads, mines, filters and splits; the training rows reach the other ranks as a
memory-mapped Arrow folder (:mod:`trainer.rows`), the small rest (held-out set, report) as a message.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from accelerate.utils import broadcast_object_list

from trainer.data import DataConfig, TrainingData, add_forms, add_hard_negatives, expand_rows, read_training_data
from trainer.errors import CodetuneError, RunFailed
from trainer.rows import load_rows, save_rows

if TYPE_CHECKING:
    import datasets
    from accelerate import Accelerator
    from sentence_transformers import SentenceTransformer

T = TypeVar("T")


def load_data_once(cfg: DataConfig, run_dir: Path, model: SentenceTransformer, acc: Accelerator) -> TrainingData:
    """The main process reads, mines, filters and splits the data and writes the rows; every process memory-maps them.

    Nothing is mined or written twice (one writer of ``run_dir/data``, even across nodes on a
    shared filesystem), and every rank holds identical rows and held-out set by construction
    rather than by independent encodes or reads agreeing (no rank reads the held-out set back).
    The training rows reach the other ranks as a file, not a message: ``run_dir/data/train``
    (Arrow, :mod:`trainer.rows`) is memory-mapped by every rank, so a million rows are not
    pickled, sent and unpickled into every process, and a node's processes share one copy of them
    in its page cache. Hard negatives are mined by every rank together, each encoding 1/N of the
    texts, so N-1 ranks do not wait on one rank's encoding pass. An error on the main process is
    sent to the others, so every rank ends with the same one line instead of waiting in a
    collective for a peer that is gone.
    """
    folder = run_dir / "data"
    together = bool(cfg.hard_negatives) and acc.num_processes > 1  # mining negatives: the one step every rank shares

    def prepare() -> TrainingData:
        data = read_training_data(cfg, run_dir, model=model)
        if together:
            save_rows(data.train, folder / "read")
        else:
            save_rows(expand_rows(data.train, cfg, model), folder / "train")
        return replace(data, train=None)  # the rest is small: the held-out set and the report

    def finish(train: datasets.Dataset) -> None:
        save_rows(add_forms(train, cfg), folder / "train")
        shutil.rmtree(folder / "read")

    data = _on_main_process(acc, prepare)
    if together:
        train = add_hard_negatives(load_rows(folder / "read"), cfg, model, across_processes=True)
        _on_main_process(acc, lambda: finish(train))
        del train  # this rank's copy of the negatives; the rows are read from the file now
    return replace(data, train=load_rows(folder / "train"))


def _on_main_process(acc: Accelerator, work: Callable[[], T]) -> T:
    """``work()`` on the main process, its (small) result sent to every process, which wait for it.

    An error there reaches every process, which raises it: one line each, not a wait in a
    collective for a peer that has gone.
    """
    payload: list = [None]
    failure = None
    if acc.is_main_process:
        try:
            payload = [work()]
        except Exception as err:  # noqa: BLE001 -- the others must hear of any failure, then it is re-raised
            failure = err
            payload = [err if isinstance(err, CodetuneError) else RunFailed(f"the main process failed preparing the data: {err}")]
    if acc.num_processes > 1:
        broadcast_object_list(payload)  # between this job's own processes
    if failure is not None:
        raise failure
    if isinstance(payload[0], Exception):
        raise payload[0]
    return payload[0]
