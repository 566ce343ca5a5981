"""Search a codebase with a (tuned) model: index its functions, query them, export to a vector store.

    python -m trainer.search index SRC [SRC ...] --out INDEX [--model default] [--dim 256]
                                    [--exclude DIR ...] [--store chroma (--chroma-path DIR | --chroma-url URL)]
                                    [--collection NAME]
    python -m trainer.search query INDEX "where do we parse the config?" [-k 5] [--model SPEC] [--dim D] [--json]

An index is a folder:

- ``manifest.json``: codetune version, model spec, the model's full dimension, the index dimension,
  the sources and the snippet count;
- ``snippets.jsonl``: one function per line (id, path, start/end line, name, language, code, and the
  sha256 of its file's text);
- ``embeddings.npy``: (N, dim) float32, truncated to ``dim`` and L2-normalised, row i = snippet i;
- ``faiss.index``: a FAISS ``IndexFlatIP`` over those rows (inner product = cosine).

Re-indexing keeps the embeddings of every file whose text hash is unchanged (same model and dim)
and encodes only the rest. Every file is replaced atomically and the manifest is written last;
:func:`load_index` refuses a folder whose files disagree on the snippet count.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer import __version__
from trainer.errors import CodetuneError, cli_main
from trainer.fileio import atomic_write_json, atomic_write_text, atomic_write_with

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

MANIFEST, SNIPPETS, EMBEDDINGS, FAISS_INDEX = "manifest.json", "snippets.jsonl", "embeddings.npy", "faiss.index"
DEFAULT_DIM = 256  # clipped to the model's dimension when --dim is not given


@dataclass(frozen=True)
class Snippet:
    """One indexed function. ``start_line``/``end_line`` are 1-based and inclusive."""

    id: str
    path: str
    start_line: int
    end_line: int
    name: str
    language: str
    code: str
    file_hash: str


@dataclass(frozen=True)
class Hit:
    """A search result: cosine score (at the index dimension) and the snippet."""

    score: float
    snippet: Snippet

    def to_dict(self) -> dict:
        """The ``--json`` form: score, path, line, end_line, name, language, code."""
        s = self.snippet
        return {
            "score": self.score,
            "path": s.path,
            "line": s.start_line,
            "end_line": s.end_line,
            "name": s.name,
            "language": s.language,
            "code": s.code,
        }


@dataclass
class IndexStats:
    """What one :func:`build_index` run did: snippets ``encoded`` afresh and ``reused`` from the old index."""

    files: int = 0
    snippets: int = 0
    encoded: int = 0
    reused: int = 0
    skipped_files: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped_files.items()))
        line = f"{self.snippets} snippets from {self.files} files: encoded {self.encoded}, reused {self.reused}"
        return line + (f"; skipped files: {skipped}" if skipped else "")


@dataclass
class SearchIndex:
    """A loaded index folder. ``embeddings``: (N, dim) float32, unit rows, row i = ``snippets[i]``."""

    folder: Path
    manifest: dict
    snippets: list[Snippet]
    embeddings: np.ndarray
    faiss_index: Any

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def model_spec(self) -> str:
        return str(self.manifest["model"])

    def check_model(self, spec: str | None = None, dim: int | None = None) -> None:
        """Raise unless ``spec``/``dim`` (None: not given) are the ones the index was built with."""
        if (spec is not None and model_id(spec) != self.model_spec) or (dim is not None and dim != self.dim):
            asked = f"{spec if spec is not None else self.model_spec} at dim {dim if dim is not None else self.dim}"
            raise CodetuneError(
                f"index {self.folder} built with {self.model_spec} at dim {self.dim}; queried with {asked}"
            )


def model_id(spec: str) -> str:
    """How a model spec is recorded: an existing local folder as its absolute path, anything else as given."""
    from trainer.models import DEFAULT_ALIASES

    if spec.lower() in DEFAULT_ALIASES:
        return "default"
    local = Path(spec).expanduser()
    return str(local.resolve()) if local.exists() else spec


# ---------------------------------------------------------------- indexing


def build_index(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model_spec: str = "default",
    *,
    model: SentenceTransformer | None = None,
    dim: int | None = None,
    exclude_dirs: Sequence[str] = (),
    batch_size: int = 64,
    show_progress: bool = True,
) -> IndexStats:
    """Index every function of ``sources`` into the folder ``out``, re-encoding only changed files.

    Args:
        sources: folders or files, walked as the miner walks them (hidden folders, ``__pycache__``,
            ``node_modules`` and ``exclude_dirs`` left out). With several, each path starts with its
            tree's label (the root's name).
        out: the index folder; an existing index there is updated.
        model_spec: recorded in the manifest; loaded with :func:`trainer.models.load_model` unless
            ``model`` is given (then it must be the model the spec names).
        dim: Matryoshka dimension; default ``min(256, model dimension)``.

    Raises:
        CodetuneError: a source that does not exist, a bad ``dim``, or ``out`` that is a file.
    """
    import numpy as np

    from trainer.data.mining import MiningReport, SourceTree, labelled_trees, parsed_files
    from trainer.embedding_cache import model_fingerprint
    from trainer.retrieval import encode, normalize_truncate

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CodetuneError(f"--out {out}: is a file, expected an index folder")
    for src in sources:
        if not Path(src).exists():
            raise CodetuneError(f"{src}: no such file or folder")
    if model is None:
        from trainer.models import load_model

        model = load_model(model_spec)
    full = model.get_embedding_dimension()
    dim = _check_dim(dim, full)

    # Old embeddings are reusable only when they came from the same weights at the same dimension:
    # a folder path can hold another model by now.
    fingerprint = model_fingerprint(model)
    old: dict[tuple[str, str], list[tuple[Snippet, np.ndarray]]] = {}
    if (out / MANIFEST).is_file():
        previous = load_index(out)
        if previous.manifest.get("model_fingerprint") == fingerprint and previous.dim == dim:
            for snippet, row in zip(previous.snippets, previous.embeddings):
                old.setdefault((snippet.path, snippet.file_hash), []).append((snippet, row))

    stats = IndexStats()
    report = MiningReport()
    trees = labelled_trees([SourceTree(Path(s), tuple(exclude_dirs)) for s in sources])
    snippets: list[Snippet] = []
    rows: list[np.ndarray | None] = []  # None: to encode
    for tree in trees:
        for rel, text, functions in parsed_files(tree, report=report):
            path = f"{tree.label}/{rel}" if tree.label else rel
            stats.files += 1
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            kept = old.get((path, digest))
            if kept is not None:
                snippets.extend(s for s, _ in kept)
                rows.extend(r for _, r in kept)
                stats.reused += len(kept)
                continue
            for fn in functions:
                snippets.append(Snippet("", path, fn.start_line, fn.end_line, fn.name, fn.language, fn.code, digest))
                rows.append(None)
    stats.skipped_files = report.skipped_files
    snippets = _with_ids(snippets)
    todo = [i for i, r in enumerate(rows) if r is None]
    stats.encoded, stats.snippets = len(todo), len(snippets)
    if todo:
        emb = encode(model, [snippets[i].code for i in todo], "document", batch_size, show_progress=show_progress)
        fresh = normalize_truncate(emb, dim).cpu().numpy()  # (len(todo), dim)
        for i, row in zip(todo, fresh):
            rows[i] = row
    embeddings = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)  # (N, dim)

    manifest = {
        "codetune_version": __version__,
        "model": model_id(model_spec),
        "model_dim": full,
        "model_fingerprint": fingerprint,
        "dim": dim,
        "sources": [str(Path(s).resolve()) for s in sources],
        "exclude_dirs": list(exclude_dirs),
        "count": len(snippets),
    }
    _write_index(out, manifest, snippets, embeddings)
    return stats


def _check_dim(dim: int | None, full: int | None) -> int:
    if full is None:
        raise CodetuneError("--model: the model does not report its embedding dimension")
    if dim is None:
        return min(DEFAULT_DIM, full)
    if not 1 <= dim <= full:
        raise CodetuneError(f"--dim {dim}: must be between 1 and the model's dimension {full}")
    return dim


def _with_ids(snippets: list[Snippet]) -> list[Snippet]:
    """Readable, stable ids ``path:line:name`` (a ``#n`` suffix on the rare clash), used by vector stores."""
    seen: Counter = Counter()
    out = []
    for s in snippets:
        base = f"{s.path}:{s.start_line}:{s.name}"
        seen[base] += 1
        out.append(Snippet(**{**asdict(s), "id": base if seen[base] == 1 else f"{base}#{seen[base]}"}))
    return out


def _faiss():
    try:
        import faiss
    except ImportError:
        raise CodetuneError("code search needs FAISS: pip install faiss-cpu") from None
    return faiss


def _flat_ip(embeddings: np.ndarray):
    index = _faiss().IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    return index


def _write_index(out: Path, manifest: dict, snippets: list[Snippet], embeddings: np.ndarray) -> None:
    """Every file atomically; the manifest last, so a crash leaves the old manifest (and a count mismatch)."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SNIPPETS, "".join(json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in snippets))
    atomic_write_with(out / EMBEDDINGS, lambda f: np.save(f, embeddings))
    data = _faiss().serialize_index(_flat_ip(embeddings))
    atomic_write_with(out / FAISS_INDEX, lambda f: f.write(data.tobytes()))
    atomic_write_json(out / MANIFEST, manifest)


def load_index(folder: str | os.PathLike) -> SearchIndex:
    """Read an index folder written by :func:`build_index`.

    Raises:
        CodetuneError: a missing or unreadable file, or files that disagree on the snippet count.
    """
    import numpy as np

    faiss = _faiss()
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise CodetuneError(f"{folder}: not a search index (no {MANIFEST}); build one with `index`")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        with open(folder / SNIPPETS, encoding="utf-8") as f:
            snippets = [Snippet(**json.loads(line)) for line in f if line.strip()]
        embeddings = np.load(folder / EMBEDDINGS)
        index = faiss.deserialize_index(np.fromfile(folder / FAISS_INDEX, dtype=np.uint8))
    except (OSError, ValueError, TypeError, RuntimeError) as err:
        raise CodetuneError(f"{folder}: unreadable index ({type(err).__name__}: {str(err)[:200]})") from None
    counts = {manifest.get("count"), len(snippets), embeddings.shape[0], index.ntotal}
    if len(counts) != 1 or embeddings.shape[1:] != (manifest.get("dim"),):
        raise CodetuneError(f"{folder}: index files disagree (interrupted write?); re-run `index`")
    return SearchIndex(folder, manifest, snippets, embeddings, index)


# ---------------------------------------------------------------- querying


def search(
    index: SearchIndex,
    queries: Sequence[str],
    model: SentenceTransformer,
    k: int = 5,
    batch_size: int = 64,
) -> list[list[Hit]]:
    """Top-``k`` snippets per query, best first, by cosine at the index dimension.

    ``model`` must be the index's model (see :meth:`SearchIndex.check_model` for the spec check);
    a model of another full dimension is refused here.
    """
    from trainer.embedding_cache import model_fingerprint
    from trainer.retrieval import encode, normalize_truncate

    if model.get_embedding_dimension() != index.manifest["model_dim"]:
        raise CodetuneError(
            f"index {index.folder} built with {index.model_spec} at dim {index.dim}; queried with a model of "
            f"dimension {model.get_embedding_dimension()} (expected {index.manifest['model_dim']})"
        )
    built_with = index.manifest.get("model_fingerprint")
    if built_with is not None and built_with != model_fingerprint(model):
        raise CodetuneError(
            f"index {index.folder}: built with other weights than {index.model_spec} holds now; "
            "re-run `index` so documents and queries come from one model"
        )
    if not index.snippets or not queries:
        return [[] for _ in queries]
    q = normalize_truncate(encode(model, list(queries), "query", batch_size), index.dim).cpu().numpy()  # (Q, dim)
    scores, ids = index.faiss_index.search(q, min(k, len(index.snippets)))  # (Q, k) each
    return [[Hit(float(s), index.snippets[i]) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, ids)]


# ---------------------------------------------------------------- Chroma


def collection_name(index_folder: str | os.PathLike) -> str:
    """A valid Chroma collection name from an index folder name: [a-zA-Z0-9._-], 3-512 chars, alnum ends."""
    name = re.sub(r"[^a-zA-Z0-9._-]+", "-", Path(index_folder).resolve().name).strip("._-") or "codetune"
    return (name if len(name) >= 3 else f"{name}-index")[:512]


def export_chroma(
    index: SearchIndex,
    *,
    path: str | os.PathLike | None = None,
    url: str | None = None,
    collection: str | None = None,
    batch_size: int = 1000,
):
    """Write the index's embeddings and metadata into a Chroma collection (cosine space); returns it.

    Exactly one of ``path`` (an embedded persistent folder) or ``url`` (a running server,
    ``http://host:port``). Ids are :attr:`Snippet.id`; ids no longer in the index are deleted and the
    rest upserted, so re-exporting after a re-index updates the collection in place.

    Raises:
        CodetuneError: chromadb missing, both or neither of path/url, or a server that does not answer.
    """
    try:
        import chromadb
        from chromadb.config import Settings
    except ImportError:
        raise CodetuneError("--store chroma needs chromadb: pip install chromadb") from None
    from urllib.parse import urlparse

    if (path is None) == (url is None):
        raise CodetuneError("--store chroma: give exactly one of --chroma-path or --chroma-url")
    settings = Settings(anonymized_telemetry=False)
    try:
        if path is not None:
            client = chromadb.PersistentClient(path=str(path), settings=settings)
        else:
            parts = urlparse(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise CodetuneError(f"--chroma-url {url}: expected http://host:port")
            client = chromadb.HttpClient(
                host=parts.hostname,
                port=parts.port or (443 if parts.scheme == "https" else 8000),
                ssl=parts.scheme == "https",
                settings=settings,
            )
        coll = client.get_or_create_collection(
            collection or collection_name(index.folder),
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"model": index.model_spec, "dim": index.dim, "codetune_version": __version__},
            embedding_function=None,  # we bring our own vectors
        )
        ids = [s.id for s in index.snippets]
        stale = sorted(set(coll.get(include=[])["ids"]) - set(ids))
        for start in range(0, len(stale), batch_size):
            coll.delete(ids=stale[start : start + batch_size])
        for start in range(0, len(ids), batch_size):
            chunk = index.snippets[start : start + batch_size]
            coll.upsert(
                ids=ids[start : start + batch_size],
                embeddings=index.embeddings[start : start + batch_size],
                documents=[s.code for s in chunk],
                metadatas=[
                    {
                        "path": s.path,
                        "line": s.start_line,
                        "end_line": s.end_line,
                        "name": s.name,
                        "language": s.language,
                        "file_hash": s.file_hash,
                    }
                    for s in chunk
                ],
            )
    except CodetuneError:
        raise
    except Exception as err:  # chromadb raises many types (connection, validation) with no common base
        where = f"--chroma-path {path}" if path is not None else f"--chroma-url {url}"
        raise CodetuneError(f"{where}: {type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    return coll


# ---------------------------------------------------------------- CLI


def print_hits(hits: list[Hit], query: str) -> None:
    """Rich output: score, ``path:line``, name, then the code with syntax highlighting."""
    from rich.console import Console
    from rich.syntax import Syntax

    console = Console()
    if not hits:
        console.print(f"no results for {query!r}")
    for rank, hit in enumerate(hits, 1):
        s = hit.snippet
        console.rule(
            f"[bold]{rank}.[/bold] [green]{hit.score:.3f}[/green]  [cyan]{s.path}:{s.start_line}[/cyan]"
            f"  [bold]{s.name}[/bold]",
            align="left",
        )
        console.print(Syntax(s.code, s.language, theme="ansi_dark", word_wrap=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.search", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    idx = sub.add_parser("index", help="index the functions of source trees")
    idx.add_argument("sources", nargs="+", metavar="SRC", help="folders or files to index")
    idx.add_argument("--out", required=True, metavar="INDEX", help="index folder (updated in place if it exists)")
    idx.add_argument("--model", default="default", help="default, a local folder (e.g. a run's model), or a hub name")
    idx.add_argument("--dim", type=int, help=f"Matryoshka dimension (default: {DEFAULT_DIM} or the model's, if less)")
    idx.add_argument("--exclude", action="append", default=[], metavar="DIR", help="folder name to skip (repeatable)")
    idx.add_argument("--batch-size", type=int, default=64)
    idx.add_argument("--store", choices=["chroma"], help="also write the embeddings into a vector store")
    idx.add_argument("--chroma-path", help="embedded persistent Chroma folder")
    idx.add_argument("--chroma-url", help="running Chroma server, e.g. http://localhost:8000")
    idx.add_argument("--collection", help="Chroma collection (default: from the INDEX folder name)")

    qry = sub.add_parser("query", help="search an index")
    qry.add_argument("index", metavar="INDEX")
    qry.add_argument("query")
    qry.add_argument("-k", type=int, default=5, help="hits to show (default: 5)")
    qry.add_argument("--model", help="must be the index's model (default: the one in its manifest)")
    qry.add_argument("--dim", type=int, help="must be the index's dimension (default: the one in its manifest)")
    qry.add_argument("--json", action="store_true", help="print the hits as JSON")
    args = parser.parse_args(argv)

    # --json: stdout is for the JSON alone; libraries print notices there (transformers prints
    # "[INFO] Running in WANDB offline mode" on import), so those go to stderr.
    to_stderr = contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else contextlib.nullcontext()
    with to_stderr:  # imports that pull in torch come after argument parsing so --help is instant
        from trainer.models import load_model

    if args.command == "index":
        if args.store is None and (args.chroma_path or args.chroma_url or args.collection):
            raise CodetuneError("--chroma-path/--chroma-url/--collection: only with --store chroma")
        if args.store == "chroma" and (args.chroma_path is None) == (args.chroma_url is None):
            raise CodetuneError("--store chroma: give exactly one of --chroma-path or --chroma-url")
        stats = build_index(
            args.sources, args.out, args.model, dim=args.dim, exclude_dirs=args.exclude, batch_size=args.batch_size
        )
        print(f"{args.out}: {stats.summary()}")
        if args.store == "chroma":
            coll = export_chroma(
                load_index(args.out), path=args.chroma_path, url=args.chroma_url, collection=args.collection
            )
            print(f"chroma collection {coll.name}: {coll.count()} snippets")
        return 0

    if args.k < 1:
        raise CodetuneError(f"-k {args.k}: must be at least 1")
    with to_stderr:
        index = load_index(args.index)
        index.check_model(args.model, args.dim)
        model = load_model(index.model_spec)
        hits = search(index, [args.query], model, k=args.k)[0]
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
    else:
        print_hits(hits, args.query)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
