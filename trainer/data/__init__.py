"""Training and evaluation data: mined from source code, or read from users' files.

Recipes make one call::

    data = load_training_data(config.data, run_dir, model=model)
    data.train      # datasets.Dataset: query, positive, [negatives], path, line, name, language
    data.eval_data  # the held-out BeirData the evaluator scores, in memory, or None
    data.eval_dir   # where that set lies on disk (a run folder keeps it for the record), or None

The modules, one step each: :mod:`~trainer.data.sources` (what a ``data.source`` entry names:
``pkg:``, git, folders), :mod:`~trainer.data.languages` (functions of a file),
:mod:`~trainer.data.mining` (pairs of a tree), :mod:`~trainer.data.filters` (dedup and limits),
:mod:`~trainer.data.splits` (train/test by file), :mod:`~trainer.data.formats` (users' files),
:mod:`~trainer.data.assemble` (every source's rows, deduplicated across sources),
:mod:`~trainer.data.decontaminate` (no row repeats an evaluation set), :mod:`~trainer.data.mixing`
(each source's share), :mod:`~trainer.data.negatives` (hard negatives), :mod:`~trainer.data.stdlib`
(the default dataset), :mod:`~trainer.data.beir` (the evaluation format). ``python -m trainer.data`` mines and
adds negatives from the command line.

The modules that pull in numpy, ``datasets``, tree-sitter or torch are imported inside the
functions here, each import saying which: every ``trainer.data.*`` import runs this file first,
and :mod:`trainer.data.beir` (evaluation) or :mod:`trainer.data.languages` (``codetune search``)
must stay cheap. The light ones (beir, queries, documents) are imported at the top.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.data.beir import BeirData, load_beir, write_beir
from trainer.data.documents import add_written_documents
from trainer.data.queries import add_query_forms, check_forms
from trainer.errors import CodetuneError

if TYPE_CHECKING:
    import datasets
    from sentence_transformers import SentenceTransformer

    from trainer.data.mining import MiningConfig
    from trainer.data.negatives import NegativesConfig
    from trainer.data.splits import SplitConfig


@dataclass
class DataConfig:
    """The ``data:`` section of a recipe config."""

    # "stdlib" (the running Python's standard library, mined and cached), "pkg:NAME" (an installed
    # distribution's files, read, never imported), "pkg:*" (every installed one), a source tree (a
    # git work tree: its tracked files), or a dataset: .jsonl/.json/.csv/.tsv/.parquet/.xml file,
    # saved `datasets` folder or BEIR folder. A list mixes them; see trainer.data.sources.
    source: str | list[str] = "stdlib"
    # Projects left out of pkg: sources, by distribution or import name, vendored copies included
    # (excluding requests leaves out pip/_vendor/requests too).
    exclude_projects: list[str] = field(default_factory=list)
    # Evaluation sets whose queries and documents no training row may repeat, exactly or nearly:
    # BEIR folders, and the sets bench/quality.py scores by name ("bench": all of them; or
    # "ood:networkx", "written:small-libs", "real:staqc", "general", ...: trainer.data.benchmarks).
    # The held-out split is always checked. See trainer.data.decontaminate.
    decontaminate: list[str] = field(default_factory=list)
    # "proportional" (each source's rows as read) or α in [0, 1]: source i gets a share ∝ rows_i^α
    # of the same total, large sources subsampled and small ones repeated (0: equal shares).
    mix: str | float = "proportional"
    eval: str | None = None  # BEIR folder to evaluate on; None: the held-out split of `source`
    eval_split: str = "test"  # qrels/<eval_split>.tsv of `eval`
    query_column: str = "query"  # column names in a user's dataset file
    positive_column: str = "positive"
    negatives_column: str | None = None  # None: use a "negatives" column when there is one
    max_train_pairs: int | None = None  # cap, drawn at random with `seed`; None keeps all
    test_fraction: float = 0.1  # share of files held out for evaluation when `eval` is None; 0: none
    max_test_queries: int | None = None  # cap on held-out queries (more: slower evaluation)
    group_by: str = "file"  # "file" or "folder": the unit that never straddles train and test
    seed: int = 0  # draws the split and the max_train_pairs sample
    min_query_words: int = 3  # mining: shorter docstring summaries are dropped
    min_code_lines: int = 3  # mining: shorter functions are dropped
    max_code_chars: int = 4000  # mining: longer functions are dropped (not truncated)
    hard_negatives: int = 0  # per query, mined with the model being trained; 0: off (costs one encoding pass)
    hard_negatives_window: list[int] = field(default_factory=lambda: [10, 50])  # ranks [start, stop) to take them from
    # Training queries: "docstring" (the pairs' own), plus rows asking by "name" (split into words)
    # and "short" (the summary as a search-box question); see trainer.data.queries.
    query_forms: list[str] = field(default_factory=lambda: ["docstring"])
    # Share of rows whose document is the function as written (docstring kept, less the summary a
    # docstring-form query was made of) instead of bare code; see trainer.data.documents. 0: off.
    written_share: float = 0.0

    def __post_init__(self) -> None:
        if self.max_train_pairs is not None and self.max_train_pairs < 1:
            raise CodetuneError(f"data.max_train_pairs: {self.max_train_pairs} must be at least 1")
        if self.hard_negatives < 0:
            raise CodetuneError(f"data.hard_negatives: {self.hard_negatives} must be 0 or more")
        if len(self.hard_negatives_window) != 2:
            raise CodetuneError(f"data.hard_negatives_window: {self.hard_negatives_window} must be two ranks")
        check_forms(self.query_forms)
        if not 0 <= self.written_share <= 1:
            raise CodetuneError(f"data.written_share: {self.written_share} must be between 0 and 1")
        from trainer.data.mixing import mix_alpha  # numpy

        mix_alpha(self.mix)
        self.split_config()
        if self.hard_negatives:
            self.negatives_config()

    def check_paths(self) -> None:
        """Fail on a missing source or evaluation folder before anything expensive (a model load) runs."""
        from trainer.data.conala import is_conala  # datasets
        from trainer.data.sources import check_package, is_package  # numpy, tree-sitter
        from trainer.data.stdlib import is_stdlib  # datasets

        sources = self.sources()
        if not sources:
            raise CodetuneError("data.source: no source given")
        for source in sources:
            if is_package(source):
                check_package(source)
            elif not is_stdlib(source) and not is_conala(source) and not Path(source).exists():
                raise CodetuneError(f"data.source: {source}: not found (nor 'stdlib', 'conala' or 'pkg:NAME')")
        if self.eval is not None and not Path(self.eval).is_dir():
            raise CodetuneError(f"data.eval: {self.eval}: BEIR folder not found")
        from trainer.data.decontaminate import check_entries  # numpy, tree-sitter

        check_entries(self.decontaminate)

    def sources(self) -> list[str]:
        """``source`` as a list, paths with ``~`` expanded."""
        sources = [self.source] if isinstance(self.source, str) else list(self.source)
        return [s if s in ("stdlib", "conala") or s.startswith("pkg:") else str(Path(s).expanduser()) for s in sources]

    def mining_config(self) -> MiningConfig:
        """The miner's settings."""
        from trainer.data.mining import MiningConfig  # numpy, tree-sitter

        return MiningConfig(self.min_query_words, self.min_code_lines, self.max_code_chars)

    def split_config(self) -> SplitConfig:
        """The held-out split's settings."""
        from trainer.data.splits import SplitConfig  # datasets

        return _prefixed(SplitConfig, self.test_fraction, self.seed, self.group_by, self.max_test_queries)

    def negatives_config(self) -> NegativesConfig:
        """The hard-negative miner's settings."""
        from trainer.data.negatives import NegativesConfig  # torch, sentence-transformers

        start, stop = self.hard_negatives_window
        return _prefixed(NegativesConfig, window=(start, stop), per_query=max(self.hard_negatives, 1))


def _prefixed(cls: type, *args: Any, **kwargs: Any) -> Any:
    """Build a settings object, naming the field as ``data.<field>`` in its error."""
    try:
        return cls(*args, **kwargs)
    except CodetuneError as err:
        raise CodetuneError(f"data.{err}") from None


@dataclass
class TrainingData:
    """What a recipe trains and evaluates on."""

    train: datasets.Dataset  # query, positive, [negatives], path, line, name, language
    eval_dir: Path | None  # the held-out set's BEIR folder, or None when nothing is held out
    eval_split: str = "test"
    eval_data: BeirData | None = None  # the held-out set itself, handed to the evaluator without a read back
    # Counts per source: "labels", "mining", "dedup", "decontamination", "mix" (see read_training_data).
    report: dict = field(default_factory=dict)


def load_training_data(
    config: DataConfig, work_dir: str | os.PathLike, model: SentenceTransformer | None = None
) -> TrainingData:
    """Training rows and an evaluation folder from ``config.source``.

    Args:
        config: the ``data`` settings.
        work_dir: where a held-out BEIR set is written when one has to be (a run folder);
            the standard library's alone is used from its cache.
        model: needed when ``config.hard_negatives`` > 0.

    Raises:
        CodetuneError: an unknown or unreadable source, no training pairs, or hard negatives
            asked for without a model.
    """
    data = read_training_data(config, work_dir, model)
    return replace(data, train=expand_rows(data.train, config, model))


def read_training_data(
    config: DataConfig, work_dir: str | os.PathLike, model: SentenceTransformer | None = None
) -> TrainingData:
    """:func:`load_training_data` up to the rows' hard negatives and query forms (:func:`expand_rows`).

    Reading, mining, filtering and splitting happen once, on one process; what follows can be
    shared by every process of a job. Between the split and the rows: duplicates across sources
    are dropped (:mod:`~trainer.data.assemble`), then rows that leak the held-out set or a
    ``data.decontaminate`` set (:mod:`~trainer.data.decontaminate`), then each source is
    resampled to its ``data.mix`` share (:mod:`~trainer.data.mixing`). ``report`` counts each step
    per source: ``labels`` (label -> its ``data.source`` entry), ``mining``, ``dedup``, ``decontamination``, ``mix``.
    """
    from trainer.data.assemble import concatenate, merge, read_sources  # datasets, tree-sitter
    from trainer.data.decontaminate import decontaminate, load_sets  # numpy
    from trainer.data.mixing import mix_sources  # numpy

    config.check_paths()
    if config.hard_negatives and model is None:
        raise CodetuneError("data.hard_negatives: mining hard negatives needs a model")
    parts, held_out, report = read_sources(config)
    own = merge(held_out) if held_out else None
    sets = ([own] if own is not None else []) + load_sets(config.decontaminate)
    if sets:
        threshold = config.mining_config().near_duplicate_threshold
        parts, report["decontamination"] = decontaminate(parts, sets, threshold)
        dropped = {k: v for k, v in report["decontamination"].items() if k in ("query", "document", "near_document")}
        if any(dropped.values()):
            print(f"data: dropped training rows that repeat an evaluation set: {dropped}")
    parts, report["mix"] = mix_sources(parts, config.mix, config.seed)
    train = concatenate([rows for _, rows in parts]) if parts else None
    if train is None or len(train) == 0:
        raise CodetuneError(f"data.source: no training pairs in {config.source}")
    if config.max_train_pairs is not None and len(train) > config.max_train_pairs:
        train = train.shuffle(seed=config.seed).select(range(config.max_train_pairs))
    if config.eval is not None:
        eval_data = load_beir(config.eval, config.eval_split)
        return TrainingData(train, Path(config.eval), config.eval_split, eval_data, report)
    if own is None:
        return TrainingData(train, None, report=report)
    return TrainingData(train, _held_out(held_out, own, Path(work_dir)), eval_data=own, report=report)


def expand_rows(
    train: datasets.Dataset, config: DataConfig, model: SentenceTransformer | None, across_processes: bool = False
) -> datasets.Dataset:
    """The rows with their hard negatives (``config.hard_negatives``), extra query forms and written documents.

    Args:
        across_processes: every process of the job calls this on the same rows; each encodes
            1/N of the texts for the negatives and all get the same rows back (a collective call).
    """
    return add_forms(add_hard_negatives(train, config, model, across_processes), config)


def add_hard_negatives(
    train: datasets.Dataset, config: DataConfig, model: SentenceTransformer | None, across_processes: bool = False
) -> datasets.Dataset:
    """The first step of :func:`expand_rows`, the one that needs the model (and, across processes, every process)."""
    if not config.hard_negatives:
        return train
    from trainer.data.negatives import mine_hard_negatives  # torch, sentence-transformers

    return mine_hard_negatives(model, train, config.negatives_config(), across_processes=across_processes)


def add_forms(train: datasets.Dataset, config: DataConfig) -> datasets.Dataset:
    """The rest of :func:`expand_rows`: extra query forms and written documents, on the rows and their negatives."""
    if config.query_forms != ["docstring"]:
        train = add_query_forms(train, config.query_forms)
    if config.written_share:
        train = add_written_documents(train, config.written_share, config.seed)
    return train


def _held_out(held_out: list[BeirData | Path], data: BeirData, work_dir: Path) -> Path:
    """The held-out set's folder: the standard library's cached one as it is, anything else
    (``data``, the merged sets) written under ``work_dir`` for the record."""
    if len(held_out) == 1 and isinstance(held_out[0], Path):
        return held_out[0]
    eval_dir = work_dir / "data" / "eval"
    write_beir(eval_dir, data)
    return eval_dir
