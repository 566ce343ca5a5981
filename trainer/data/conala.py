"""``conala``: people's Stack Overflow questions with the code that answers them, shipped as a training source.

Pairs mined from a codebase ask the way its docstrings are written ("Return the number of days in
the given month."). People ask otherwise ("how to get number of days in month python"), and a
model tuned only on docstrings loses, at full dimension, some of what its base knew about their
questions. CoNaLa's curated split (1,709 distinct Stack Overflow titles, each with the snippets
that answer it; provenance and licence in ``sets/conala/README.md``) puts their wording back into
training. It is general, not the user's code, so none of it is held out: the held-out split stays
the mined sources' own and a run's before/after table compares the same code as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from trainer.data.formats import rows_dataset

CONALA = "conala"
CONALA_FILE = Path(__file__).parent / "sets" / "conala" / "train.jsonl"


def is_conala(source: str) -> bool:
    """True for the source name ``conala`` (a folder of that name needs a path: ``./conala``)."""
    return str(source) == CONALA


def conala_dataset() -> datasets.Dataset:
    """One training row per question: its title as the query, its snippets (one per line) as the code."""
    with CONALA_FILE.open(encoding="utf-8") as f:
        questions = [json.loads(line) for line in f if line.strip()]
    return rows_dataset([{"query": q["intent"], "positive": "\n".join(q["snippets"]), "language": "python"}
                         for q in questions])
