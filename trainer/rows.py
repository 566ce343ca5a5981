"""Training rows on disk: saved once as Arrow, memory-mapped by every process, read a slice or a batch at a time.

A million pairs are a gigabyte or two of code. As Python dicts that is several times more, in
every process; saved with ``datasets`` (``save_to_disk``) and memory-mapped (``load_from_disk``),
the text stays in the page cache, which the processes of a node share, and a process reads the
rows of a batch when it trains on them. What a process holds per row is what batching needs: a
few numbers (:mod:`trainer.data.batches`).

Every function here also takes a list of dicts (tests, small scripts): the same code reads both.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

from trainer.errors import CodetuneError

if TYPE_CHECKING:
    import datasets

Rows = Union["datasets.Dataset", Sequence[dict]]

CHUNK = 10_000  # rows read into Python at once: ~10-30 MB of code, whatever the dataset's size


def is_dataset(rows: Rows) -> bool:
    """Whether ``rows`` is a ``datasets.Dataset`` (else a list of dicts)."""
    import datasets  # ~1 s to import: not for a list of dicts

    return isinstance(rows, datasets.Dataset)


def chunks(rows: Rows, columns: Sequence[str], size: int = CHUNK) -> Iterator[dict[str, list]]:
    """``columns`` of consecutive rows, ``size`` rows at a time: ``{column: values}``, None where a row has no value.

    A dataset's other columns are not read, and no column is ever one Python list.
    """
    if not is_dataset(rows):
        yield {c: [r.get(c) for r in rows] for c in columns}
        return
    present = rows.select_columns([c for c in columns if c in rows.column_names])
    for start in range(0, len(rows), size):
        part, n = present[start : start + size], min(size, len(rows) - start)
        yield {c: part.get(c, [None] * n) for c in columns}


def take(rows: Rows, indices: Iterable[int]) -> list[dict]:
    """The rows at ``indices``, as dicts, read now (a memory-mapped dataset pages in just these)."""
    indices = [int(i) for i in indices]
    if not is_dataset(rows):
        return [rows[i] for i in indices]
    if not indices:
        return []
    columns = rows[indices]  # {column: values}: one gather from the Arrow table
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def save_rows(rows: datasets.Dataset, folder: Path) -> None:
    """Write ``rows`` to ``folder`` (replacing it) for :func:`load_rows`; a reader never sees half a folder.

    Written beside it first, then renamed: a run killed while writing leaves the old folder or none.
    """
    tmp = folder.with_name(f".{folder.name}.writing")
    shutil.rmtree(tmp, ignore_errors=True)
    rows.save_to_disk(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def load_rows(folder: Path) -> datasets.Dataset:
    """The rows :func:`save_rows` wrote, memory-mapped (nothing is read until a row or column is).

    Raises:
        CodetuneError: when ``folder`` is missing (e.g. a node that does not see the run folder).
    """
    import datasets  # ~1 s to import: not for a list of dicts

    if not (folder / "state.json").is_file():
        raise CodetuneError(
            f"output_dir: {folder} not found on this node; the run folder must be on a filesystem every node sees"
        )
    return datasets.load_from_disk(str(folder))
