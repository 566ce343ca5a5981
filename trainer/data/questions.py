"""People's questions over code as it is written: the sets that say whether tuning helps where a model is used.

A tuned model is used by indexing functions as they stand in the file, docstrings and comments
kept (:mod:`trainer.search`), and searched with what people type. The miner's held-out sets ask
with docstring summaries over docstring-free code: a proxy. These sets are the use itself:

* ``staqc``: 187 Stack Overflow question titles over 647 Python answer snippets as posted
  (shipped in ``trainer/data/sets/staqc``; provenance and licence in its README);
* ``click``: 66 questions in users' words about the installed ``click`` package, each answered by
  one of its functions (any definition of that name in that file), over every click function
  as written (``trainer/data/sets/click_questions.jsonl``).

Nothing in :mod:`trainer.data` trains on them (``tests/test_decontamination.py`` proves it for the
default data by content).
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.data.beir import BeirData, load_beir
from trainer.errors import CodetuneError

SETS_DIR = Path(__file__).parent / "sets"
QUESTION_SETS = ("staqc", "click")


def check_question_set(name: str) -> None:
    """One-line error (naming ``eval.questions``) unless ``name`` is a shipped set or a BEIR folder."""
    if name not in QUESTION_SETS and not Path(name).is_dir():
        raise CodetuneError(f"eval.questions: {name!r} is neither a shipped set ({', '.join(QUESTION_SETS)}) nor a BEIR folder")


def question_set(name: str) -> BeirData:
    """The shipped set ``name`` (one of :data:`QUESTION_SETS`) or a BEIR folder, loaded."""
    check_question_set(name)
    if name == "staqc":
        return load_beir(SETS_DIR / "staqc")
    if name == "click":
        return click_questions()
    return load_beir(name)


def click_questions() -> BeirData:
    """The click questions as a BEIR set: every function of the installed click as written."""
    try:
        import click  # here: a project the set is about, not a dependency; missing, only this set fails
    except ImportError:
        raise CodetuneError("eval.questions: the click set needs the click package installed") from None
    # Here: numpy and tree-sitter, which only the click set needs (every recipe config checks
    # eval.questions through this module).
    from trainer.data.languages import written_sources
    from trainer.data.mining import parsed_files

    data = BeirData()
    by_key: dict[tuple[str, str], list[str]] = {}
    for rel, text, functions in parsed_files(Path(click.__file__).parent):
        for fn, code in zip(functions, written_sources(text, functions)):
            doc_id = f"{rel}:{fn.start_line}:{fn.name}"
            data.corpus[doc_id] = {"title": "", "text": code, "path": rel, "name": fn.name}
            by_key.setdefault((rel, fn.name), []).append(doc_id)
    rows = [json.loads(line) for line in (SETS_DIR / "click_questions.jsonl").read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows):
        answers = by_key.get((row["path"], row["name"]), [])
        if answers:  # a click release that renamed the function: the question is left out, not failed
            data.queries[f"q{i}"] = row["question"]
            data.qrels[f"q{i}"] = {doc_id: 1 for doc_id in answers}
    return data
