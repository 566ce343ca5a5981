"""What the index holds for one function, and the text it encodes and tokenizes for it.

The miner cuts a Python function's docstring out of its code, because a training pair whose query
is the docstring must not find it again in the document. A user's index is the opposite case:
the docstring and comments are the very words people search with. So a snippet's ``code`` is the
function as it stands in the file (docstring and comments included), and :func:`document_text`
puts light context in front of it: the module path and the qualified name (class and method).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from trainer.data.languages import Function, written_sources

DOCUMENT_VERSION = 2  # bump when document_text changes: older indexes are then re-encoded, not reused


@dataclass(frozen=True)
class Snippet:
    """One indexed function. ``start_line``/``end_line`` are 1-based and inclusive.

    ``code`` holds the lines ``start_line..end_line`` of the file, dedented (a Python docstring
    included). ``doc`` is documentation that stands outside those lines (a JSDoc/Javadoc block, Go
    or Rust doc comments above the function), or None.
    """

    id: str
    path: str
    start_line: int
    end_line: int
    name: str
    language: str
    code: str
    file_hash: str
    doc: str | None = None


@dataclass(frozen=True)
class Hit:
    """A search result: the mode's score (cosine for dense, BM25 for lexical, RRF for hybrid) and the snippet."""

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


def file_snippets(path: str, text: str, functions: list[Function], file_hash: str) -> list[Snippet]:
    """The snippets of one file (ids still empty: see :func:`with_ids`)."""
    return [
        Snippet(
            id="",
            path=path,
            start_line=fn.start_line,
            end_line=fn.end_line,
            name=fn.name,
            language=fn.language,
            code=code,
            file_hash=file_hash,
            doc=fn.docstring if fn.language != "python" else None,
        )
        for fn, code in zip(functions, written_sources(text, functions))
    ]


def module_path(path: str) -> str:
    """``click/termui.py`` -> ``click.termui``; ``pkg/__init__.py`` -> ``pkg``; ``web/api.js`` -> ``web.api``."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if len(parts) > 1 and parts[-1] in ("__init__", "index", "mod"):
        parts.pop()
    return ".".join(parts)


def document_text(snippet: Snippet) -> str:
    """The text the index encodes and tokenizes: ``module: Class.method``, outside documentation, the code."""
    head = f"{module_path(snippet.path)}: {snippet.name}"
    return "\n".join(part for part in (head, snippet.doc, snippet.code) if part)


def with_ids(snippets: list[Snippet]) -> list[Snippet]:
    """Readable, stable ids ``path:line:name`` (a ``#n`` suffix on the rare clash), used by vector stores."""
    seen: Counter = Counter()
    out = []
    for s in snippets:
        base = f"{s.path}:{s.start_line}:{s.name}"
        seen[base] += 1
        out.append(replace(s, id=base if seen[base] == 1 else f"{base}#{seen[base]}"))
    return out

