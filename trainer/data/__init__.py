"""Training and evaluation data: mined from source code, or read from users' files.

Recipes make one call::

    data = load_training_data(config.data, run_dir, model=model)
    data.train      # datasets.Dataset: query, positive, [negatives], path, line, name, language
    data.eval_data  # the held-out BeirData the evaluator scores, in memory, or None
    data.eval_dir   # where that set lies on disk (a run folder keeps it for the record), or None

The modules, one step each: :mod:`~trainer.data.languages` (functions of a file),
:mod:`~trainer.data.mining` (pairs of a tree), :mod:`~trainer.data.filters` (dedup and limits),
:mod:`~trainer.data.splits` (train/test by file), :mod:`~trainer.data.formats` (users' files),
:mod:`~trainer.data.negatives` (hard negatives), :mod:`~trainer.data.stdlib` (the default
dataset), :mod:`~trainer.data.beir` (the evaluation format). ``python -m trainer.data`` mines and
adds negatives from the command line.

The heavy modules (``datasets``, tree-sitter, torch) are imported inside the functions here, so
that importing :mod:`trainer.data.beir` for evaluation alone stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import CodetuneError

if TYPE_CHECKING:
    import datasets
    from sentence_transformers import SentenceTransformer

    from trainer.data.beir import BeirData
    from trainer.data.mining import MiningConfig
    from trainer.data.negatives import NegativesConfig
    from trainer.data.splits import SplitConfig


@dataclass
class DataConfig:
    """The ``data:`` section of a recipe config."""

    # "stdlib" (the running Python's standard library, mined and cached), a source tree, or a
    # dataset: .jsonl/.json/.csv/.tsv/.parquet/.xml file, saved `datasets` folder or BEIR folder.
    # A list mixes them; each is split into train/test on its own.
    source: str | list[str] = "stdlib"
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
    # Keep a pair only if the model being trained already ranks its positive in this many of the
    # training pool's documents for its query (drops docstrings that do not describe their code); 0: off.
    consistency_top_k: int = 0
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
        if self.consistency_top_k < 0:
            raise CodetuneError(f"data.consistency_top_k: {self.consistency_top_k} must be 0 (off) or more")
        if len(self.hard_negatives_window) != 2:
            raise CodetuneError(f"data.hard_negatives_window: {self.hard_negatives_window} must be two ranks")
        from trainer.data.queries import check_forms

        check_forms(self.query_forms)
        if not 0 <= self.written_share <= 1:
            raise CodetuneError(f"data.written_share: {self.written_share} must be between 0 and 1")
        self.split_config()
        if self.hard_negatives:
            self.negatives_config()

    def check_paths(self) -> None:
        """Fail on a missing source or evaluation folder before anything expensive (a model load) runs."""
        from trainer.data.stdlib import is_stdlib

        sources = [self.source] if isinstance(self.source, str) else list(self.source)
        if not sources:
            raise CodetuneError("data.source: no source given")
        for source in sources:
            if not is_stdlib(source) and not Path(source).exists():
                raise CodetuneError(f"data.source: {source}: not found (nor 'stdlib')")
        if self.eval is not None and not Path(self.eval).is_dir():
            raise CodetuneError(f"data.eval: {self.eval}: BEIR folder not found")

    def mining_config(self) -> MiningConfig:
        """The miner's settings."""
        from trainer.data.mining import MiningConfig

        return MiningConfig(self.min_query_words, self.min_code_lines, self.max_code_chars)

    def split_config(self) -> SplitConfig:
        """The held-out split's settings."""
        from trainer.data.splits import SplitConfig

        return _prefixed(SplitConfig, self.test_fraction, self.seed, self.group_by, self.max_test_queries)

    def negatives_config(self) -> NegativesConfig:
        """The hard-negative miner's settings."""
        from trainer.data.negatives import NegativesConfig

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


def load_training_data(
    config: DataConfig, work_dir: str | os.PathLike, model: SentenceTransformer | None = None
) -> TrainingData:
    """Training rows and an evaluation folder from ``config.source``.

    Args:
        config: the ``data`` settings.
        work_dir: where a held-out BEIR set is written when one has to be (a run folder);
            the standard library's alone is used from its cache.
        model: needed when ``config.hard_negatives`` or ``config.consistency_top_k`` > 0.

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
    shared by every process of a job.
    """
    config.check_paths()
    if config.hard_negatives and model is None:
        raise CodetuneError("data.hard_negatives: mining hard negatives needs a model")
    if config.consistency_top_k and model is None:
        raise CodetuneError("data.consistency_top_k: consistency filtering needs a model")
    trains, held_out = _read_sources(config)
    train = _concatenate(trains)
    if len(train) == 0:
        raise CodetuneError(f"data.source: no training pairs in {config.source}")
    if config.max_train_pairs is not None and len(train) > config.max_train_pairs:
        train = train.shuffle(seed=config.seed).select(range(config.max_train_pairs))
    if config.consistency_top_k:
        from trainer.data.consistency import consistency_filter

        train, dropped = consistency_filter(model, train, config.consistency_top_k)
        print(f"data.consistency_top_k={config.consistency_top_k}: dropped {dropped} pairs whose query does not find its code")
        if len(train) == 0:
            raise CodetuneError(f"data.consistency_top_k: {config.consistency_top_k} dropped every training pair")
    if config.eval is not None:
        from trainer.data.beir import load_beir

        return TrainingData(train, Path(config.eval), config.eval_split, load_beir(config.eval, config.eval_split))
    if not held_out:
        return TrainingData(train, None)
    eval_dir, eval_data = _held_out(held_out, Path(work_dir))
    return TrainingData(train, eval_dir, eval_data=eval_data)


def expand_rows(
    train: datasets.Dataset, config: DataConfig, model: SentenceTransformer | None, across_processes: bool = False
) -> datasets.Dataset:
    """The rows with their hard negatives (``config.hard_negatives``), extra query forms and written documents.

    Args:
        across_processes: every process of the job calls this on the same rows; each encodes
            1/N of the texts for the negatives and all get the same rows back (a collective call).
    """
    if config.hard_negatives:
        from trainer.data.negatives import mine_hard_negatives

        train = mine_hard_negatives(model, train, config.negatives_config(), across_processes=across_processes)
    if config.query_forms != ["docstring"]:
        from trainer.data.queries import add_query_forms

        train = add_query_forms(train, config.query_forms)
    if config.written_share:
        from trainer.data.documents import add_written_documents

        train = add_written_documents(train, config.written_share, config.seed)
    return train


def _read_sources(config: DataConfig) -> tuple[list[datasets.Dataset], list[BeirData | Path]]:
    """Training rows of each source, and its held-out part (a BEIR set, or the stdlib cache's folder)."""
    from trainer.data.formats import load_pairs
    from trainer.data.mining import mine
    from trainer.data.splits import beir_from_rows, split_mined, split_rows
    from trainer.data.stdlib import is_stdlib, stdlib_dataset

    sources = [config.source] if isinstance(config.source, str) else list(config.source)  # existing: check_paths
    split = config.split_config()
    hold_out = config.eval is None and split.test_fraction > 0
    trains: list[datasets.Dataset] = []
    held_out: list[BeirData | Path] = []
    trees = []
    for source in sources:
        if is_stdlib(source):
            train, test_dir = stdlib_dataset(config.mining_config(), split)
            trains.append(train)
            if hold_out and test_dir is not None:
                held_out.append(test_dir)
        elif _is_dataset(source):
            rows = load_pairs(
                source, config.query_column, config.positive_column, config.negatives_column, config.eval_split
            )
            if hold_out:
                rows, test = split_rows(rows, split)
                if len(test):
                    held_out.append(beir_from_rows(test))
            trains.append(rows)
        else:
            trees.append(source)
    if trees:  # mined together, so that duplicates across the trees are removed too
        mined = split_mined(mine(trees, config.mining_config()), split)
        trains.append(mined.train_dataset())
        if hold_out and mined.test:
            held_out.append(mined.test_beir())
    return trains, held_out


def _held_out(held_out: list[BeirData | Path], work_dir: Path) -> tuple[Path, BeirData]:
    """The held-out set and its folder: the standard library's cached one as it is, anything else
    written under ``work_dir`` for the record."""
    from trainer.data.beir import write_beir

    data = _merge(held_out)
    if len(held_out) == 1 and isinstance(held_out[0], Path):
        return held_out[0], data
    eval_dir = work_dir / "data" / "eval"
    write_beir(eval_dir, data)
    return eval_dir, data


def _is_dataset(source: str) -> bool:
    """A dataset file or folder, as opposed to a source tree to mine."""
    from trainer.data.languages import language_for_path

    path = Path(source)
    if path.is_file():
        return language_for_path(path) is None
    markers = ("corpus.jsonl", "dataset_info.json", "dataset_dict.json")
    return any((path / marker).is_file() for marker in markers)


def _concatenate(parts: list[datasets.Dataset]) -> datasets.Dataset:
    """One dataset of several, giving ``negatives: []`` to parts without the column when others have it."""
    import datasets

    if any("negatives" in p.column_names for p in parts):
        feature = datasets.List(datasets.Value("string"))
        parts = [
            p if "negatives" in p.column_names else p.add_column("negatives", [[]] * len(p), feature=feature)
            for p in parts
        ]
        parts = [p.select_columns(parts[0].column_names) for p in parts]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _merge(sets: list[BeirData | Path]) -> BeirData:
    """One BEIR set of several; ids get a per-source prefix so that two sources cannot collide."""
    from trainer.data.beir import BeirData, load_beir

    loaded = [load_beir(s) if isinstance(s, Path) else s for s in sets]
    if len(loaded) == 1:
        return loaded[0]
    merged = BeirData()
    for i, data in enumerate(loaded):
        merged.corpus.update({f"s{i}-{d}": doc for d, doc in data.corpus.items()})
        merged.queries.update({f"s{i}-{q}": text for q, text in data.queries.items()})
        merged.qrels.update({f"s{i}-{q}": {f"s{i}-{d}": s for d, s in docs.items()} for q, docs in data.qrels.items()})
    return merged
