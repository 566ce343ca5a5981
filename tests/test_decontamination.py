"""No evaluation function or question reaches the default run's training rows: checked by content.

The held-out split is by file and the other sets come from projects the default never mines, so
paths alone would say "clean". A copy does not care about paths: the standard library could carry
a function that HumanEval's solution or a Stack Overflow answer also holds, renamed or reformatted.
So every evaluation document is normalised as the miner normalises code (tokens, the function's
own name masked, docstring cut) and offered to the miner's own deduplicator after all of them:
any training document it calls a duplicate or near duplicate of one is contamination. Queries are
compared case- and whitespace-normalised. The rows checked are what ``read_training_data`` hands
the recipe with the default config's data section, after its own decontamination against the
held-out split (which this check found missing: 16 held-out docstrings, e.g. abc.py's and
_py_abc.py's, were also training queries) and the bench sets by name (``data.decontaminate:
[bench]``, which this check asked for: docstring summaries of the out-of-domain projects, e.g.
pydoc's pager docstrings copied into click, were also standard-library training queries).
"""

from dataclasses import replace
from pathlib import Path

import pytest

from trainer.config import load_config
from trainer.data import expand_rows, read_training_data
from trainer.data.beir import load_beir
from trainer.data.filters import Deduplicator
from trainer.data.general import humaneval_beir
from trainer.data.languages import ParseError, extract_functions
from trainer.data.mining import MiningConfig, SourceTree, mine
from trainer.data.questions import question_set
from trainer.data.stdlib import stdlib_dataset
from trainer.session import FineTuneConfig

pytestmark = pytest.mark.slow
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "matryoshka.yaml"


def _normalised_texts(text: str) -> list[tuple[str, str | None]]:
    """(code, name) forms of one evaluation document: as given, and each function in it as the miner cuts it."""
    forms: list[tuple[str, str | None]] = [(text, None)]
    try:
        forms += [(fn.code, fn.name) for fn in extract_functions("eval.py", text, "python")]
    except (ParseError, RecursionError):
        pass  # a snippet that is not a whole Python file is compared as given
    return forms


def _query_key(text: str) -> str:
    return " ".join(text.lower().split())


def _evaluation_sets(test_dir):
    import click
    import jinja2
    import networkx
    import requests
    import rich
    import sklearn

    sets = {"in-domain": load_beir(test_dir), "general": humaneval_beir(), "staqc": question_set("staqc"),
            "click": question_set("click")}
    trees = [SourceTree(m.__path__[0], exclude_dirs=("tests", "test", "testing")) for m in
             (networkx, sklearn, click, rich, jinja2, requests)]
    ood = mine(trees, MiningConfig())  # every function of the out-of-domain projects, as bench/quality.py uses them
    return sets, [fn.code for fn in ood.documents], [p.query for p in ood.pairs]


def test_no_evaluation_document_or_query_reaches_the_default_training_rows(tmp_path):
    default = load_config(FineTuneConfig, [], DEFAULT_CONFIG).data
    assert default.decontaminate == ["bench"]
    cfg = replace(default, written_share=0.5)  # the default's rows, both document forms
    train = read_training_data(cfg, tmp_path).train
    test_dir = stdlib_dataset(cfg.mining_config(), cfg.split_config())[1]
    rows = expand_rows(train, cfg, model=None)
    sets, ood_documents, ood_queries = _evaluation_sets(test_dir)

    dedup = Deduplicator(MiningConfig().near_duplicate_threshold)
    documents = [d["text"] for data in sets.values() for d in data.corpus.values()] + ood_documents
    for text in documents:
        for code, name in _normalised_texts(text):
            dedup.add(code, name)
    positives = {(row["positive"], row["name"]) for row in train}  # the bare code of every training document
    copies = [name for code, name in positives if dedup.add(code, name)]
    assert copies == [], f"training documents that copy an evaluation document: {copies[:5]}"

    eval_queries = {_query_key(q) for data in sets.values() for q in data.queries.values()}
    leaked = sorted({q for q in rows["query"] if _query_key(q) in eval_queries})
    assert leaked == [], f"training queries that are evaluation queries: {leaked[:5]}"
    shared_with_ood = {_query_key(q) for q in rows["query"]} & {_query_key(q) for q in ood_queries}
    assert shared_with_ood == set(), sorted(shared_with_ood)  # any docstring of theirs, scored or not


def test_the_check_finds_a_planted_copy():
    """The same check on a training document that renames and reformats an evaluation solution flags it."""
    solution = humaneval_beir().corpus
    text = next(iter(solution.values()))["text"]
    (fn,) = extract_functions("eval.py", text, "python")[:1]
    planted = fn.code.replace(fn.name.rsplit(".", 1)[-1], "renamed_helper").replace("    ", "        ")
    dedup = Deduplicator(MiningConfig().near_duplicate_threshold)
    for code, name in _normalised_texts(text):
        dedup.add(code, name)
    assert dedup.add(planted, "renamed_helper") in ("duplicate", "near_duplicate")
