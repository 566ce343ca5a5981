"""Export an index into a Chroma collection, where RAG stacks read their vectors.

Chroma stores float vectors: an index of ``float32`` or ``float16`` precision is exported as
float32; ``int8`` and ``binary`` indexes are refused rather than exported as something else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from trainer import __version__
from trainer.errors import CodetuneError
from trainer.search.store import SearchIndex

FLOAT_PRECISIONS = ("float32", "float16")


def check_exportable(precision: str) -> None:
    if precision not in FLOAT_PRECISIONS:
        raise CodetuneError(f"--store chroma: needs --precision float32 or float16 (Chroma stores floats), not {precision}")


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
        # Here: an optional extra (codetune[search]), heavy, and needed by --store chroma alone.
        import chromadb
        from chromadb.config import Settings
    except ImportError:
        raise CodetuneError("--store chroma needs chromadb: pip install chromadb") from None

    check_exportable(index.precision)
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
        embeddings = index.embeddings  # (N, dim) float32
        stale = sorted(set(coll.get(include=[])["ids"]) - set(ids))
        for start in range(0, len(stale), batch_size):
            coll.delete(ids=stale[start : start + batch_size])
        for start in range(0, len(ids), batch_size):
            chunk = index.snippets[start : start + batch_size]
            coll.upsert(
                ids=ids[start : start + batch_size],
                embeddings=embeddings[start : start + batch_size],
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
