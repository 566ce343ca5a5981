"""Users' own training data as rows of ``query``, ``positive`` and optional ``negatives``.

:func:`load_pairs` reads, by suffix or folder content:

- ``.jsonl`` (one object per line) and ``.json`` (an array of objects, or JSON Lines);
- ``.csv`` and ``.tsv`` with a header row; a ``negatives`` cell is a JSON list or one text;
- ``.parquet``;
- a folder saved by ``datasets`` (``save_to_disk``; of a ``DatasetDict`` the ``train`` split);
- a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``): one row per
  relevant (query, document) judgement;
- ``.xml`` of ``<example>``s, each with a ``<user_input>`` (the query) and ``<snippets>`` holding
  fenced code blocks whose first line names the file (``# src/config.py``, ``// src/a.ts`` or
  ``src/config.py``); one row per (query, snippet). Code inside the file need not be escaped.

Every row comes out with the same columns (:data:`ROW_COLUMNS`): ``query``, ``positive``,
``negatives`` (when the source has any), and metadata ``path``, ``line``, ``name``, ``language``,
``docstring`` (empty or 0 where the source has none). Other columns are dropped. Any problem raises
:class:`~trainer.errors.CodetuneError` naming the file and the line, row or column.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from trainer.data.beir import load_beir
from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_text, iter_jsonl, read_text

ROW_COLUMNS = ("query", "positive", "negatives", "path", "line", "name", "language", "docstring")
METADATA_DEFAULTS = {"path": "", "line": 0, "name": "", "language": "", "docstring": ""}
FORMATS = ".jsonl, .json, .csv, .tsv, .parquet, .xml, a saved datasets folder or a BEIR folder"

_FEATURES = {
    "query": datasets.Value("string"),
    "positive": datasets.Value("string"),
    "negatives": datasets.List(datasets.Value("string")),
    "path": datasets.Value("string"),
    "line": datasets.Value("int64"),
    "name": datasets.Value("string"),
    "language": datasets.Value("string"),
    "docstring": datasets.Value("string"),  # mined rows: the documentation cut out of `positive`
}


def rows_dataset(rows: list[dict]) -> datasets.Dataset:
    """Rows -> a :class:`datasets.Dataset` with the standard columns and types.

    ``negatives`` is a column when any row has it (missing ones become ``[]``); missing metadata
    takes :data:`METADATA_DEFAULTS`; other keys are dropped. An empty list gives an empty dataset
    with the same columns.
    """
    columns = [c for c in ROW_COLUMNS if c != "negatives" or any("negatives" in r for r in rows)]
    defaults = {**METADATA_DEFAULTS, "negatives": []}
    data = {c: [r.get(c, defaults.get(c)) for r in rows] for c in columns}
    return datasets.Dataset.from_dict(data, features=datasets.Features({c: _FEATURES[c] for c in columns}))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write rows as JSON Lines, replacing ``path`` atomically."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def load_pairs(
    source: str | os.PathLike,
    query_column: str = "query",
    positive_column: str = "positive",
    negatives_column: str | None = None,
    beir_split: str = "test",
) -> datasets.Dataset:
    """Training rows from a user's file or folder (see the module docstring for the formats).

    Args:
        source: the file or folder.
        query_column, positive_column: the source's names for the query and the positive text.
        negatives_column: the source's name for a list of negatives. None reads a ``negatives``
            column when there is one; a name given must exist.
        beir_split: the qrels file a BEIR folder is read from.

    Raises:
        CodetuneError: unknown format, empty file, malformed line, missing column or empty value,
            naming the file and the line or row.
    """
    path = Path(source)
    columns = _Columns(query_column, positive_column, negatives_column)
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            rows = list(_beir_rows(path, beir_split))
        elif (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            rows = _hf_rows(path, columns)
        else:
            raise CodetuneError(f"{path}: not a BEIR folder (no corpus.jsonl) nor a saved datasets folder")
    elif not path.is_file():
        raise CodetuneError(f"{path}: file not found")
    else:
        suffix = path.suffix.lower()
        if suffix not in _READERS:
            raise CodetuneError(f"{path}: unknown data format {suffix or '(no suffix)'!r} (expected {FORMATS})")
        if path.stat().st_size == 0:
            raise CodetuneError(f"{path}: empty file")
        rows = _READERS[suffix](path, columns)
    if not rows:
        raise CodetuneError(f"{path}: no rows")
    return rows_dataset(rows)


class _Columns:
    """The user's column names, and the check that turns one raw record into a standard row."""

    def __init__(self, query: str, positive: str, negatives: str | None) -> None:
        self.query, self.positive = query, positive
        self.negatives = negatives or "negatives"
        self.negatives_required = negatives is not None

    def check_header(self, where: str, names: Iterable[str]) -> None:
        """Fail on a missing required column, listing the ones there are."""
        names = list(names)
        required = [self.query, self.positive] + ([self.negatives] if self.negatives_required else [])
        for name in required:
            if name not in names:
                raise CodetuneError(f"{where}: missing column {name!r} (columns: {', '.join(map(str, names))})")

    def row(self, where: str, record: dict) -> dict:
        """A standard row from one record; ``where`` names the file and line/row for errors."""
        self.check_header(where, record.keys())
        row = {"query": _text(where, record, self.query), "positive": _text(where, record, self.positive)}
        if record.get(self.negatives) is not None:
            row["negatives"] = _negatives(where, record[self.negatives], self.negatives)
        for key, default in METADATA_DEFAULTS.items():
            value = record.get(key)
            if value not in (None, ""):
                row[key] = _metadata(where, key, value, default)
        return row


def _text(where: str, record: dict, column: str) -> str:
    value = record[column]
    if not isinstance(value, str):
        raise CodetuneError(f"{where}: column {column!r} must be text, not {type(value).__name__}")
    if not value.strip():
        raise CodetuneError(f"{where}: column {column!r} is empty")
    return value


def _negatives(where: str, value: object, column: str) -> list[str]:
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return []
        if not stripped.startswith("["):
            return [value]
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            raise CodetuneError(f"{where}: column {column!r} is not a JSON list of texts") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise CodetuneError(f"{where}: column {column!r} must be a list of texts")
    return [v for v in value if v.strip()]


def _metadata(where: str, key: str, value: object, default: object) -> object:
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise CodetuneError(f"{where}: column {key!r} must be a whole number, not {value!r}") from None
    return str(value)


def _jsonl_rows(path: Path, columns: _Columns) -> list[dict]:
    return [columns.row(f"{path}:{lineno}", record) for lineno, record in iter_jsonl(path)]


def _json_rows(path: Path, columns: _Columns) -> list[dict]:
    text = read_text(path)
    if not text.lstrip().startswith("["):
        return _jsonl_rows(path, columns)  # many .json files are JSON Lines
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise CodetuneError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    rows = []
    for index, record in enumerate(records):
        where = f"{path}: item {index}"
        if not isinstance(record, dict):
            raise CodetuneError(f"{where}: expected a JSON object, not {type(record).__name__}")
        rows.append(columns.row(where, record))
    return rows


def _csv_rows(path: Path, columns: _Columns) -> list[dict]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    columns.check_header(f"{path}:1", reader.fieldnames or [])
    rows = []
    for record in reader:
        where = f"{path}:{reader.line_num}"
        if None in record:
            raise CodetuneError(f"{where}: more cells than header columns")
        rows.append(columns.row(where, {k: v for k, v in record.items() if v is not None}))
    return rows


def _parquet_rows(path: Path, columns: _Columns) -> list[dict]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise CodetuneError(f"{path}: not a readable Parquet file ({type(err).__name__})") from None
    columns.check_header(str(path), table.column_names)
    return [columns.row(f"{path}: row {i}", record) for i, record in enumerate(table.to_pylist())]


def _hf_rows(path: Path, columns: _Columns) -> list[dict]:
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise CodetuneError(f"{path}: a DatasetDict without a 'train' split (splits: {', '.join(loaded)})")
        loaded = loaded["train"]
    columns.check_header(str(path), loaded.column_names)
    return [columns.row(f"{path}: row {i}", record) for i, record in enumerate(loaded)]


def _beir_rows(folder: Path, split: str) -> Iterator[dict]:
    data = load_beir(folder, split)
    for qid, docs in data.relevant().items():
        for did in sorted(docs):
            doc = data.corpus[did]
            meta = {k: doc[k] for k in METADATA_DEFAULTS if doc.get(k) not in (None, "")}
            yield {"query": data.queries[qid], "positive": data.document_text(did), **meta}


_EXAMPLE = re.compile(r"<example\b[^>]*>(.*?)</example\s*>", re.DOTALL)
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})([^\n]*)\n(.*?)^[ \t]*\1[ \t]*$", re.DOTALL | re.MULTILINE)
_FILE_LINE = re.compile(r"^\s*(?:#|//|--|;|/\*|<!--)?\s*(\S+?)\s*(?:\*/|-->)?\s*$")
_FENCE_LANGUAGES = {
    "py": "python",
    "js": "javascript",
    "jsx": "javascript",
    "ts": "typescript",
    "tsx": "typescript",
    "golang": "go",
    "rs": "rust",
}
_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)


def _xml_rows(path: Path, columns: _Columns) -> list[dict]:
    """Examples from the XML format; read with patterns, not an XML parser, as code is rarely escaped."""
    text = read_text(path)
    examples = list(_EXAMPLE.finditer(text))
    if not examples:
        raise CodetuneError(f"{path}: no <example> elements")
    rows = []
    for match in examples:
        where = f"{path}:{text.count(chr(10), 0, match.start()) + 1}"
        query = _unescape(_element(match.group(1), "user_input", where)).strip()
        if not query:
            raise CodetuneError(f"{where}: <user_input> is empty")
        snippets = _unescape(_element(match.group(1), "snippets", where))
        blocks = list(_FENCE.finditer(snippets))
        if not blocks:
            raise CodetuneError(f"{where}: <snippets> holds no fenced code block")
        for block in blocks:
            rows.append(_snippet_row(where, query, block.group(2), block.group(3)))
    return rows


def _element(body: str, tag: str, where: str) -> str:
    found = re.search(rf"<{tag}\b[^>]*>(.*?)</{tag}\s*>", body, re.DOTALL)
    if found is None:
        raise CodetuneError(f"{where}: <example> has no <{tag}>")
    return found.group(1)


def _unescape(text: str) -> str:
    """CDATA sections as they are; entities (``&lt;``) decoded elsewhere, as an XML writer would have escaped them."""
    parts = _CDATA.split(text)
    return "".join(part if i % 2 else html.unescape(part) for i, part in enumerate(parts))


def _snippet_row(where: str, query: str, info: str, body: str) -> dict:
    """One row from a fenced block: the first line names the file when it looks like a path."""
    language, _, rest = info.strip().partition(" ")
    first, _, code = body.partition("\n")
    named = _FILE_LINE.match(first)
    path = rest.strip()
    if named and _looks_like_path(named.group(1)):
        path = named.group(1)
    else:
        code = body
    if not code.strip():
        raise CodetuneError(f"{where}: a snippet{' of ' + path if path else ''} holds no code")
    language = _FENCE_LANGUAGES.get(language.lower(), language.lower())
    return {"query": query, "positive": code.rstrip("\n"), "path": path, "language": language}


def _looks_like_path(token: str) -> bool:
    return ("/" in token or "." in token.lstrip(".")) and not token.endswith((":", ";", "(", ")", "{"))


_READERS = {
    ".jsonl": _jsonl_rows,
    ".json": _json_rows,
    ".csv": _csv_rows,
    ".tsv": _csv_rows,
    ".parquet": _parquet_rows,
    ".xml": _xml_rows,
}
