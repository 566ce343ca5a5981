"""More than one way to ask for the same function: query forms derived from a mined pair, no model needed.

A docstring summary ("Return the number of days in the given month.") is how a library documents
a function, not how people search for one: they type a few words ("days in month") or the name
they half remember. Training only on summaries teaches the model that queries are full English
sentences. Each extra form adds a training row with the same code and a different query:

* ``name``: the function's name split into words (``Calendar.monthrange`` -> "calendar
  monthrange", ``parse_http_date`` -> "parse http date"), the class prefixed when the name alone
  is one word;
* ``short``: the summary cut to its first clause, lower case, without the trailing period, the
  leading "Return"/"Returns" and article; kept when 2 to 8 words: a search-box question.
* ``web``: that question as typed into a web search engine, which does not know the project:
  the language named in one of three word orders ("python parse http date", "parse http date
  python", "how to parse http date in python"), chosen by a hash of the query so every process
  and every run makes the same row.

Forms apply to training rows only; evaluation sets keep their queries as written.
"""

from __future__ import annotations

import re
import zlib
from typing import TYPE_CHECKING

from trainer.errors import CodetuneError

if TYPE_CHECKING:
    import datasets

QUERY_FORMS = ("docstring", "name", "short", "web")
WEB_TEMPLATES = ("{language} {query}", "{query} {language}", "how to {query} in {language}")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_CLAUSE = re.compile(r"[,;:(]| - | -- |\. ")
_LEAD = re.compile(r"^((returns?|gets?|this (function|method) returns?)\s+)?((the|a|an)\s+)?", re.IGNORECASE)


def identifier_words(identifier: str) -> list[str]:
    """``parseHTTPDate`` / ``parse_http_date`` -> ``["parse", "http", "date"]``."""
    words = []
    for part in re.split(r"[_\W]+", identifier):
        words += [w.lower() for w in _CAMEL.split(part) if w]
    return words


def name_query(name: str) -> str | None:
    """The words of a (qualified) function name, or None when they say nothing (``__init__``, ``run``)."""
    parts = [p for p in name.split(".") if p]
    if not parts or (parts[-1].startswith("__") and parts[-1].endswith("__")):
        return None
    words = identifier_words(parts[-1])
    if len(words) < 2 and len(parts) > 1:
        words = identifier_words(parts[-2]) + words
    return " ".join(words) if len(words) >= 2 else None


def search_words(summary: str, max_words: int = 8) -> str | None:
    """A docstring summary's first clause as a search-box question, or None when it is not 2 to ``max_words`` words."""
    clause = _CLAUSE.split(summary.strip(), maxsplit=1)[0].strip().rstrip(".").strip()
    clause = _LEAD.sub("", clause)
    words = clause.lower().split()
    return " ".join(words) if 2 <= len(words) <= max_words else None


def short_query(summary: str, max_words: int = 8) -> str | None:
    """A docstring summary as a search-box question, or None when it would not differ from the summary."""
    short = search_words(summary, max_words)
    return None if short is None or short == summary.lower().rstrip(".") else short


def web_query(summary: str, language: str) -> str | None:
    """The summary's search-box question with its language named, as a web search asks; None without one."""
    short = search_words(summary)
    if not short or not language:
        return None
    template = WEB_TEMPLATES[zlib.crc32(short.encode()) % len(WEB_TEMPLATES)]  # stable across processes, unlike hash()
    return template.format(language=language, query=short)


def check_forms(forms: list[str]) -> None:
    """One-line error for an unknown form or a list without ``docstring``."""
    for form in forms:
        if form not in QUERY_FORMS:
            raise CodetuneError(f"data.query_forms: unknown form {form!r} (choose from {', '.join(QUERY_FORMS)})")
    if "docstring" not in forms:
        raise CodetuneError("data.query_forms: must include 'docstring' (the pairs' own queries)")


def add_query_forms(rows: datasets.Dataset, forms: list[str]) -> datasets.Dataset:
    """``rows`` followed by one extra row per derived query (``query_form`` says which form).

    Rows without a ``name`` column (user datasets) get no ``name`` form; a derived query equal to
    the row's own is not added twice.
    """
    import datasets  # here: ~1 s to import, and trainer.data imports this module (config checks need none)

    check_forms(forms)
    extra = [f for f in forms if f != "docstring"]
    rows = rows.add_column("query_form", ["docstring"] * len(rows)) if "query_form" not in rows.column_names else rows
    if not extra:
        return rows
    names = rows["name"] if "name" in rows.column_names else [""] * len(rows)
    languages = rows["language"] if "language" in rows.column_names else [""] * len(rows)
    new = []
    for i, (query, name, language) in enumerate(zip(rows["query"], names, languages)):
        derived = {"name": name_query(name) if name else None, "short": short_query(query)}
        if "web" in extra:
            derived["web"] = web_query(query, language)
        seen = {query.lower()}
        for form in extra:
            q = derived[form]
            if q and q.lower() not in seen:
                seen.add(q.lower())
                new.append((i, form, q))
    if not new:
        return rows
    added = rows.select([i for i, _, _ in new])
    added = added.remove_columns(["query", "query_form"])
    added = added.add_column("query", [q for _, _, q in new]).add_column("query_form", [f for _, f, _ in new])
    added = added.select_columns(rows.column_names).cast(rows.features)
    return datasets.concatenate_datasets([rows, added])
