"""How a training document looks: the function with its docstring cut out, or as people index it.

The miner cuts a Python function's docstring out of its code (CodeSearchNet's convention), because
a pair whose query is the docstring's summary must not find that summary again in its document.
But a user's index holds functions as they are written, docstrings and comments kept
(:mod:`trainer.search.snippets`), and a model trained only on bare code learns to look past prose
in a document. ``data.written_share`` turns a share of the training rows' documents into the
function as written, without the one sentence that would give the answer away:

* rows asking by the docstring (``docstring`` and ``short`` query forms): the docstring minus its
  summary paragraph (argument and return descriptions, notes, examples), so the model learns to
  read the rest of the prose beside the code rather than to copy the summary;
* rows asking by the function's name words (``name``): the whole docstring, as the index holds it.

Functions without a docstring, other languages and users' own rows (no ``docstring`` column) keep
their document as it is.
"""

from __future__ import annotations

import ast
import random
from typing import TYPE_CHECKING

from trainer.errors import CodetuneError

if TYPE_CHECKING:
    import datasets


def docstring_rest(docstring: str) -> str:
    """The docstring after its summary paragraph (empty when the summary is all there is).

        >>> docstring_rest("Parse a file.\\n\\nArgs:\\n    path: where")
        'Args:\\n    path: where'
    """
    from trainer.data.mining import docstring_summary  # here: numpy and tree-sitter; trainer.data imports this module

    lines = docstring.strip().split("\n")
    summary = docstring_summary(docstring)
    seen: list[str] = []
    for i, line in enumerate(lines):  # the summary ends where docstring_summary stopped reading
        seen.append(line.strip())
        if " ".join(" ".join(seen).split()) == summary or not line.strip():
            return "\n".join(lines[i + 1 :]).strip()
    return ""


def with_docstring(code: str, docstring: str) -> str:
    """``code`` (a Python function without its docstring) with ``docstring`` put back as its first statement.

    Returns ``code`` unchanged when it does not parse or holds no function: a document is better
    bare than broken.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    fn = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if fn is None or not fn.body:
        return code
    first = fn.body[0]
    lines = code.split("\n")
    indent = " " * first.col_offset
    text = docstring.replace('"""', r"\"\"\"").strip()
    body = (text + " " if text.endswith('"') else text).split("\n")  # no four quotes in a row
    quoted = [f'{indent}"""{body[0]}', *(f"{indent}{line}" if line.strip() else "" for line in body[1:])]
    if len(body) == 1:
        quoted = [f'{indent}"""{body[0]}"""']
    else:
        quoted.append(f'{indent}"""')
    at = first.lineno - 1
    if first.col_offset and lines[at][: first.col_offset].strip():  # body on the def line: leave it
        return code
    return "\n".join(lines[:at] + quoted + lines[at:])


def written_document(code: str, docstring: str, query_form: str) -> str:
    """The function as written for a row asking in ``query_form`` (see the module docstring)."""
    if not docstring:
        return code
    prose = docstring if query_form == "name" else docstring_rest(docstring)
    return with_docstring(code, prose) if prose else code


def add_written_documents(rows: datasets.Dataset, share: float, seed: int) -> datasets.Dataset:
    """``rows`` with the documents of a seeded ``share`` of them written out (docstring kept).

    Every process calling this with the same rows and seed gets the same rows back.
    """
    if not 0 <= share <= 1:
        raise CodetuneError(f"data.written_share: {share} must be between 0 and 1")
    if share == 0 or "docstring" not in rows.column_names:
        return rows
    rng = random.Random(seed)
    forms = rows["query_form"] if "query_form" in rows.column_names else ["docstring"] * len(rows)
    positives = list(rows["positive"])
    for i, (docstring, language, form) in enumerate(zip(rows["docstring"], rows["language"], forms)):
        if rng.random() < share and docstring and language == "python":
            positives[i] = written_document(positives[i], docstring, form)
    return rows.remove_columns("positive").add_column("positive", positives).select_columns(rows.column_names)
