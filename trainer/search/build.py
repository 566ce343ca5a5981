"""Build or update an index folder from source trees, encoding only the files that changed.

A file is reused without being read when its size and modification time are the ones recorded
and it was not modified within two seconds of that build (a write in the same clock tick as the
last build could otherwise hide a change); otherwise it is read, and reused when its sha256 is
unchanged. Reuse also needs the same weights, dimension, precision, compute precision, token
limit and document text recipe.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer import __version__
from trainer.data.mining import MiningReport, SourceTree, labelled_trees, parsed_files, source_files
from trainer.errors import CodetuneError
from trainer.search.dense import PRECISIONS, DenseIndex, calibrate, check_precision, quantize
from trainer.search.lexical import TOKENS_VERSION, LexicalIndex, TokenIds
from trainer.search.snippets import DOCUMENT_VERSION, Snippet, document_text, file_snippets, with_ids
from trainer.search.store import BM25, MANIFEST, load_index, model_id, write_index

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_DIM = 256  # clipped to the model's dimension when --dim is not given
PARALLEL_FILES = 500  # files to read per worker: below twice this, the parent reads them (a spawn costs about a second)
RACY_NS = 2_000_000_000  # a file modified this close to the last build is read again, whatever its stat says


@dataclass
class IndexStats:
    """What one :func:`build_index` run did: snippets ``encoded`` afresh and ``reused`` from the old index."""

    files: int = 0
    snippets: int = 0
    encoded: int = 0
    reused: int = 0
    unread_files: int = 0  # reused on their size and mtime alone
    unchanged: bool = False  # nothing to do: the index was left as it was, not rewritten
    skipped_files: Counter = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step: load, files, encode, lexical, write
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # this process's CPU time per step

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped_files.items()))
        line = f"{self.snippets} snippets from {self.files} files: encoded {self.encoded}, reused {self.reused}"
        line += "; nothing changed, index left as it was" if self.unchanged else ""
        return line + (f"; skipped files: {skipped}" if skipped else "")


def check_dim(dim: int | None, full: int | None) -> int:
    if full is None:
        raise CodetuneError("--model: the model does not report its embedding dimension")
    if dim is None:
        return min(DEFAULT_DIM, full)
    if not 1 <= dim <= full:
        raise CodetuneError(f"--dim {dim}: must be between 1 and the model's dimension {full}")
    return dim


@dataclass
class _Previous:
    """What an earlier build left that this one may reuse, by path: each snippet with its vector and its row number."""

    snippets: dict[str, list[tuple[Snippet, np.ndarray, int]]] = field(default_factory=dict)
    files: dict[str, list] = field(default_factory=dict)
    ranges: np.ndarray | None = None
    built_ns: int = 0
    token_ids: TokenIds | None = None  # None: every document is tokenized again
    manifest: dict = field(default_factory=dict)


def _previous(out: Path, manifest: dict) -> _Previous:
    """The reusable part of the index at ``out``: nothing when it was built otherwise, or is unreadable."""
    if not (out / MANIFEST).is_file():
        return _Previous()
    try:
        old = load_index(out)
    except CodetuneError:
        return _Previous()  # an older format or a damaged folder: rebuilt from scratch
    same = ("model_fingerprint", "dim", "precision", "max_tokens", "document_version")  # no max_tokens (older index): None, the default
    if not old.snippets or old.compute != manifest["compute"] or any(old.manifest.get(k) != manifest[k] for k in same):
        return _Previous()
    prev = _Previous(files=old.files, ranges=old.dense.ranges, built_ns=int(old.manifest.get("built_ns", 0)),
                     manifest=old.manifest)
    for i, (snippet, row) in enumerate(zip(old.snippets, old.dense.vectors)):
        prev.snippets.setdefault(snippet.path, []).append((snippet, row, i))
    if old.manifest.get("tokens_version") == TOKENS_VERSION:
        try:
            prev.token_ids = TokenIds.load(out / old.manifest["generation"] / BM25)
        except (OSError, ValueError):
            pass  # written before token ids were kept, or damaged: tokenized again
        if prev.token_ids is not None and len(prev.token_ids) != len(old.snippets):
            prev.token_ids = None
    return prev


def build_index(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model_spec: str = "default",
    *,
    model: SentenceTransformer | None = None,
    dim: int | None = None,
    precision: str = "float32",
    exclude_dirs: Sequence[str] = (),
    batch_size: int = 64,
    show_progress: bool = True,
    compute: str = "auto",
    max_tokens: int | None = None,
) -> IndexStats:
    """Index every function of ``sources`` into the folder ``out``, re-encoding only changed files.

    Args:
        sources: folders or files, walked as the miner walks them (hidden folders, ``__pycache__``,
            ``node_modules`` and ``exclude_dirs`` left out). With several, each path starts with its
            tree's label (the root's name).
        out: the index folder; an existing index there is updated, and stays as it was if this fails.
        model_spec: recorded in the manifest; loaded with :func:`trainer.models.backends.load_encoder`
            for ``compute`` unless ``model`` is given (then it must be the model the spec names).
        dim: Matryoshka dimension; default ``min(256, model dimension)``.
        precision: how vectors are stored (see :mod:`trainer.search.dense`).
        compute: ``auto`` (bf16 autocast where the hardware has it), ``bf16`` or ``fp32``, or an
            OpenVINO graph: ``openvino``, ``openvino-int8`` (:mod:`trainer.models.backends`);
            recorded in the manifest, and queries are encoded the same way.
        max_tokens: cut each function at this many tokens instead of the model's ``max_seq_length``
            (a ``model`` given must already cut there). Recorded in the manifest: an update at
            another limit re-encodes everything.

    Raises:
        CodetuneError: a source that does not exist, a bad ``dim`` or ``precision``, or ``out`` that is a file.
    """
    # Here, not at the top: every `codetune search` command imports this module, and only indexing
    # needs torch and sentence-transformers (embedding_cache, retrieval, models: seconds) or tqdm.
    from tqdm.auto import tqdm

    from trainer.embedding_cache import model_fingerprint
    from trainer.models.backends import load_encoder
    from trainer.retrieval import ENCODER_COMPUTES, encode, normalize_truncate, resolve_compute

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CodetuneError(f"--out {out}: is a file, expected an index folder")
    for src in sources:
        if not Path(src).exists():
            raise CodetuneError(f"{src}: no such file or folder")
    if precision not in PRECISIONS:
        check_precision(precision, 0)  # before loading a model
    compute = resolve_compute(compute, choices=ENCODER_COMPUTES)
    if max_tokens is not None and max_tokens < 1:
        raise CodetuneError(f"--max-tokens {max_tokens}: must be at least 1")
    if max_tokens is not None and model is not None and model.max_seq_length != max_tokens:
        raise CodetuneError(f"max_tokens {max_tokens}: the model given cuts at {model.max_seq_length} tokens")
    if model is None:
        model = load_encoder(model_spec, compute, max_seq_length=max_tokens)
    full = model.get_embedding_dimension()
    dim = check_dim(dim, full)
    check_precision(precision, dim)

    manifest = {
        "codetune_version": __version__,
        "model": model_id(model_spec),
        "model_dim": full,
        "model_fingerprint": model_fingerprint(model),
        "dim": dim,
        "precision": precision,
        "compute": compute,
        "max_tokens": max_tokens,  # None: the model's own max_seq_length
        "document_version": DOCUMENT_VERSION,
        "tokens_version": TOKENS_VERSION,
        "sources": [str(Path(s).resolve()) for s in sources],
        "exclude_dirs": list(exclude_dirs),
        "built_ns": time.time_ns(),
    }
    stats = IndexStats()
    clock = (time.perf_counter(), time.process_time())
    prev = _previous(out, manifest)
    clock = _lap(stats, "load", clock)
    report = MiningReport()
    snippets: list[Snippet] = []
    rows: list[np.ndarray | None] = []  # None: to encode
    old_rows: list[int] = []  # each snippet's row in the old index, -1 for a new one
    files: dict[str, list] = {}
    trees = labelled_trees([SourceTree(Path(s), tuple(exclude_dirs)) for s in sources])
    listed = [(tree, file, rel) for tree in trees for file, rel, _ in source_files(tree)]
    entries: list[tuple[str, list, list | None]] = []  # path, its record, the old snippets reused on stat alone
    jobs: list[tuple[Path, str]] = []  # the files to read
    for tree, file, rel in listed:
        path = f"{tree.label}/{rel}" if tree.label else rel
        try:
            st = file.stat()
        except OSError:
            report.skip("unreadable", rel)
            continue
        record = prev.files.get(path)
        if record is not None and record[:2] == [st.st_size, st.st_mtime_ns] and st.st_mtime_ns < prev.built_ns - RACY_NS:
            entries.append((path, record, prev.snippets.get(path, [])))
            stats.unread_files += 1
        else:
            entries.append((path, [st.st_size, st.st_mtime_ns, None], None))
            jobs.append((file, path))
    read = _read_files(jobs)
    for path, record, kept in tqdm(entries, desc="files", unit="file", disable=not show_progress):
        if kept is None:
            got = next(read)
            if isinstance(got, str):
                report.skip(got, path)
                continue
            record[2], fresh = got
            old = prev.files.get(path)
            if old is not None and old[2] == record[2]:
                kept = prev.snippets.get(path, [])
        stats.files += 1
        files[path] = record
        if kept is not None:
            snippets.extend(s for s, _, _ in kept)
            rows.extend(r for _, r, _ in kept)
            old_rows.extend(i for _, _, i in kept)
            stats.reused += len(kept)
            continue
        fresh = with_ids(fresh)  # ids only tell apart one file's functions
        snippets.extend(fresh)
        rows.extend([None] * len(fresh))
        old_rows.extend([-1] * len(fresh))
    stats.skipped_files = report.skipped_files
    clock = _lap(stats, "files", clock)
    if prev.token_ids is None:
        old_rows = [-1] * len(snippets)
    texts = [document_text(s) if r < 0 else None for s, r in zip(snippets, old_rows)]  # None: its tokens are kept
    todo = [i for i, r in enumerate(rows) if r is None]
    stats.encoded, stats.snippets = len(todo), len(snippets)

    if _unchanged(prev, manifest, files, todo, old_rows):
        # Rewriting 300k functions' vectors, texts and BM25 took 25 s for nothing (bench/search_scale.py).
        stats.unchanged = True
        return stats

    ranges = prev.ranges
    if todo:
        emb = encode(model, [texts[i] for i in todo], "document", batch_size, show_progress=show_progress, compute=compute)
        unit = normalize_truncate(emb, dim).cpu().numpy()  # (len(todo), dim) float32
        if precision == "int8" and ranges is None:
            ranges = calibrate(unit)  # calibrated once; kept while the index is updated so old codes stay valid
        for i, row in zip(todo, quantize(unit, precision, ranges)):
            rows[i] = row
    width = dim // 8 if precision == "binary" else dim
    dtype = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "binary": np.uint8}[precision]
    vectors = np.stack(rows).astype(dtype) if rows else np.zeros((0, width), dtype)
    if precision == "int8" and ranges is None:
        ranges = np.zeros((2, dim), np.float32)  # an empty index: nothing calibrated yet
    dense = DenseIndex(precision, dim, vectors, ranges if precision == "int8" else None)
    clock = _lap(stats, "encode", clock)
    token_ids = TokenIds.assemble(texts, prev.token_ids, old_rows, show_progress=show_progress)
    lexical = LexicalIndex.from_token_ids(token_ids, show_progress=show_progress)
    clock = _lap(stats, "lexical", clock)
    write_index(out, {**manifest, "count": len(snippets)}, snippets, dense, lexical, files)
    _lap(stats, "write", clock)
    return stats


def _read_file(job: tuple[Path, str]) -> tuple[str, list[Snippet]] | str:
    """A file's sha256 and snippets (ids still empty), or why the miner skips it (``job``: file, index path)."""
    file, path = job
    report = MiningReport()
    parsed = next(parsed_files(SourceTree(file), report=report), None)  # the miner's reading and skipping
    if parsed is None:
        return next(iter(report.skipped_files))
    _, text, functions = parsed
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digest, file_snippets(path, text, functions, digest)


def _read_files(jobs: list[tuple[Path, str]]) -> Iterator[tuple[str, list[Snippet]] | str]:
    """:func:`_read_file` of each job, in order: in a process per core when there are many files.

    Parsing is Python, one core's work, and a whole environment's 20,000 files took 2 minutes of
    it. The workers are spawned, not forked: the parent already runs the encoder's thread pools.
    """
    workers = min(os.cpu_count() or 1, len(jobs) // PARALLEL_FILES)
    if workers < 2:
        yield from map(_read_file, jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_read_file, jobs, chunksize=32)


def _unchanged(prev: _Previous, manifest: dict, files: dict, todo: list[int], old_rows: list[int]) -> bool:
    """True when this build would write back exactly the index it found: same settings, files and rows."""
    volatile = ("built_ns", "codetune_version", "count", "format", "generation")
    same_settings = {k: v for k, v in prev.manifest.items() if k not in volatile} == {
        k: v for k, v in manifest.items() if k not in volatile
    }
    return (
        bool(prev.manifest)
        and same_settings
        and prev.token_ids is not None
        and not todo
        and files == prev.files
        and old_rows == list(range(len(prev.token_ids)))
    )


def _lap(stats: IndexStats, step: str, since: tuple[float, float]) -> tuple[float, float]:
    """Record the wall and CPU seconds since ``since`` (as this returns them) as ``step``'s."""
    now = (time.perf_counter(), time.process_time())
    stats.seconds[step], stats.cpu_seconds[step] = now[0] - since[0], now[1] - since[1]
    return now
