"""The index folder: every build writes a new generation, and one rename of the manifest switches to it.

    INDEX/manifest.json            format, model, dims, precision, count, the current generation
    INDEX/g-<id>/snippets.jsonl    one Snippet per line
    INDEX/g-<id>/vectors.npy       (N, dim) float32 | float16 | int8, or (N, dim/8) uint8 sign bits
    INDEX/g-<id>/int8_ranges.npy   (2, dim) float32, int8 only: the calibration the codes were made with
    INDEX/g-<id>/files.json        path -> [size, mtime_ns, sha256]: what re-indexing may skip unread
    INDEX/g-<id>/bm25/             the bm25s lexical index, and each function's BM25 tokens as ids
                                   (token_ids.npy, token_offsets.npy, vocab.json): an update
                                   tokenizes only the changed files' functions

A build that fails or is killed part-way leaves the manifest, and so the index, as it was: the
new generation is complete before ``manifest.json`` names it, and older generations are removed
only after. :func:`load_index` also refuses a folder whose files disagree on the snippet count.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_json
from trainer.search.dense import DenseIndex, dequantize
from trainer.search.lexical import LexicalIndex
from trainer.search.snippets import Snippet

FORMAT = 2
MANIFEST, SNIPPETS, VECTORS, RANGES, FILES, BM25 = (
    "manifest.json",
    "snippets.jsonl",
    "vectors.npy",
    "int8_ranges.npy",
    "files.json",
    "bm25",
)
_FORMAT1 = ("snippets.jsonl", "embeddings.npy", "faiss.index")  # codetune 0.1 kept these beside the manifest


def model_id(spec: str) -> str:
    """How a model spec is recorded: an existing local folder as its absolute path, anything else as given."""
    from trainer.models import DEFAULT_ALIASES  # here: trainer.models imports torch; a BM25 query must not

    if spec.lower() in DEFAULT_ALIASES:
        return "default"
    local = Path(spec).expanduser()
    return str(local.resolve()) if local.exists() else spec


@dataclass
class SearchIndex:
    """A loaded index folder: ``snippets[i]`` is row i of ``dense.vectors`` and document i of ``lexical``."""

    folder: Path
    manifest: dict
    snippets: list[Snippet]
    dense: DenseIndex
    files: dict[str, list]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def compute(self) -> str:
        """How documents were encoded, and so queries must be (an index from before the key: fp32)."""
        return str(self.manifest.get("compute", "fp32"))

    @property
    def max_tokens(self) -> int | None:
        """The token limit documents were cut at, and queries are (None: the model's own ``max_seq_length``)."""
        value = self.manifest.get("max_tokens")
        return None if value is None else int(value)

    @property
    def model_spec(self) -> str:
        return str(self.manifest["model"])

    @property
    def embeddings(self) -> np.ndarray:
        """(N, dim) float32: the rows search scores against (dequantized for int8 and binary)."""
        return dequantize(self.dense.vectors, self.precision, self.dense.ranges)

    @property
    def faiss_index(self):
        return self.dense.faiss

    @cached_property
    def lexical(self) -> LexicalIndex:
        """Loaded on first use: a dense-only query never reads it."""
        lexical = LexicalIndex.load(self.folder / self.manifest["generation"] / BM25, len(self.snippets))
        if lexical.bm25 is not None and lexical.bm25.scores["num_docs"] != len(self.snippets):
            raise CodetuneError(f"{self.folder}: index files disagree (lexical index); re-run `index`")
        return lexical

    def check_model(self, spec: str | None = None, dim: int | None = None) -> None:
        """Raise unless ``spec``/``dim`` (None: not given) are the ones the index was built with."""
        if (spec is not None and model_id(spec) != self.model_spec) or (dim is not None and dim != self.dim):
            asked = f"{spec if spec is not None else self.model_spec} at dim {dim if dim is not None else self.dim}"
            raise CodetuneError(
                f"index {self.folder} built with {self.model_spec} at dim {self.dim}; queried with {asked}"
            )


def write_index(
    out: Path,
    manifest: dict,
    snippets: list[Snippet],
    dense: DenseIndex,
    lexical: LexicalIndex,
    files: dict[str, list],
) -> None:
    """Write a new generation under ``out``, then point the manifest at it, then remove older ones."""
    out.mkdir(parents=True, exist_ok=True)
    generation = f"g-{uuid.uuid4().hex[:12]}"
    folder = out / generation
    try:
        folder.mkdir()
        with open(folder / SNIPPETS, "w", encoding="utf-8") as f:
            # vars, not asdict: the same fields in the same order, without asdict's deep copy (~1 s per 100k)
            f.writelines(json.dumps(vars(s), ensure_ascii=False) + "\n" for s in snippets)
        np.save(folder / VECTORS, dense.vectors)
        if dense.ranges is not None:
            np.save(folder / RANGES, dense.ranges)
        (folder / FILES).write_text(json.dumps(files), encoding="utf-8")
        lexical.save(folder / BM25)
        _sync(folder)
        atomic_write_json(out / MANIFEST, {**manifest, "format": FORMAT, "generation": generation})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for child in out.iterdir():
        if child.is_dir() and child.name.startswith("g-") and child.name != generation:
            shutil.rmtree(child, ignore_errors=True)
    for name in _FORMAT1:
        (out / name).unlink(missing_ok=True)


def _sync(folder: Path) -> None:
    """Flush the generation's files to disk before the manifest names it (a power cut keeps the old one)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def load_index(folder: str | os.PathLike) -> SearchIndex:
    """Read an index folder written by :func:`trainer.search.build_index`.

    Raises:
        CodetuneError: not an index, one from an older codetune, a missing or unreadable file, or
            files that disagree on the snippet count.
    """
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise CodetuneError(f"{folder}: not a search index (no {MANIFEST}); build one with `index`")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise CodetuneError(f"{folder}: an index in an older format; run `index` again to rebuild it")
        data = folder / manifest["generation"]
        with open(data / SNIPPETS, encoding="utf-8") as f:
            snippets = [Snippet(**json.loads(line)) for line in f if line.strip()]
        vectors = np.load(data / VECTORS)
        ranges = np.load(data / RANGES) if manifest["precision"] == "int8" else None
        files = json.loads((data / FILES).read_text(encoding="utf-8"))
    except CodetuneError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CodetuneError(f"{folder}: unreadable index ({type(err).__name__}: {str(err)[:200]})") from None
    if len({manifest.get("count"), len(snippets), vectors.shape[0]}) != 1:
        raise CodetuneError(f"{folder}: index files disagree (interrupted write?); re-run `index`")
    dense = DenseIndex(manifest["precision"], int(manifest["dim"]), vectors, ranges)
    return SearchIndex(folder, manifest, snippets, dense, files)
