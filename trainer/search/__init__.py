"""Search a codebase with a (tuned) model: index its functions, query them, export to a vector store.

    python -m trainer.search index SRC [SRC ...] --out INDEX [--model default] [--dim 256] [--precision int8]
    python -m trainer.search query INDEX "where do we parse the config?" [-k 5] [--mode hybrid] [--json]

Modules, in the order data moves: :mod:`~trainer.search.snippets` (what is indexed for a function),
:mod:`~trainer.search.build` (walk, reuse, encode), :mod:`~trainer.search.dense` (precisions and
FAISS), :mod:`~trainer.search.lexical` (BM25), :mod:`~trainer.search.store` (the folder on disk),
:mod:`~trainer.search.query` (modes, filters, fusion), :mod:`~trainer.search.output` (printing),
:mod:`~trainer.search.chroma` (export), :mod:`~trainer.search.cli`.
"""

from trainer.search.build import DEFAULT_DIM, IndexStats, build_index
from trainer.search.chroma import collection_name, export_chroma
from trainer.search.cli import main
from trainer.search.dense import PRECISIONS
from trainer.search.query import MODES, search
from trainer.search.snippets import Hit, Snippet, document_text
from trainer.search.store import SearchIndex, load_index, model_id

__all__ = [
    "DEFAULT_DIM",
    "MODES",
    "PRECISIONS",
    "Hit",
    "IndexStats",
    "SearchIndex",
    "Snippet",
    "build_index",
    "collection_name",
    "document_text",
    "export_chroma",
    "load_index",
    "main",
    "model_id",
    "search",
]
