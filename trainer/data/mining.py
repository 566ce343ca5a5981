"""(query, code) pairs from source trees, as CodeSearchNet made them: the docstring's summary is the query.

Run from the command line with ``python -m trainer.data mine SRC --out DIR``; from code::

    result = mine(["path/to/repo"])
    result.pairs[0].query, result.pairs[0].function.code
    print(result.report.to_dict())

Steps: walk each tree (hidden folders, ``__pycache__`` and ``node_modules`` left out), read every
file of a supported language (:data:`trainer.data.languages.EXTENSIONS`), extract every function
(:func:`trainer.data.languages.extract_functions`), keep the ones whose code passes the size
limits and is not a duplicate (these are the *documents*: a retrieval corpus), and pair those
whose documentation gives a usable query (these are the *pairs*).

Nothing about one bad file stops a run: files that are too large, binary, not UTF-8, unreadable or
that do not parse are skipped and counted by reason in :class:`MiningReport`, which also counts
every function dropped and why.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainer.data.filters import Deduplicator, Fingerprint, code_lines, fingerprint, query_is_name
from trainer.data.languages import Function, ParseError, extract_functions, language_for_path

__all__ = [
    "Function",
    "MiningConfig",
    "MiningReport",
    "MiningResult",
    "Pair",
    "SkipFile",
    "SourceTree",
    "docstring_summary",
    "extract_functions",
    "functions_in_tree",
    "mine",
    "read_source",
    "source_files",
]

ALWAYS_EXCLUDED = ("__pycache__", "node_modules")  # with every folder whose name starts with "."

# Why a function is dropped. The first group removes its code from the corpus; the second keeps
# the code as a document but makes no pair of it.
CODE_DROPS = ("too_long", "short_code", "duplicate", "near_duplicate")
QUERY_DROPS = ("no_docstring", "short_query", "query_is_name")


@dataclass(frozen=True)
class MiningConfig:
    """What the miner keeps. Every field is part of the stdlib cache key."""

    min_query_words: int = 3  # shorter summaries ("Helper.", "Return x.") say too little to search by
    min_code_lines: int = 3  # non-blank lines after the docstring is cut: signature-only stubs go
    max_code_chars: int = (
        4000  # longer functions are skipped, not truncated: a cut body is not a document anyone would retrieve
    )
    max_file_bytes: int = 1_000_000  # larger files are generated or data (e.g. pydoc_data/topics.py)
    near_duplicate_threshold: float = 0.85  # Jaccard of token 3-shingles; above 1 keeps near duplicates


@dataclass(frozen=True)
class SourceTree:
    """A folder (or one file) to mine, with folder names to leave out at any depth."""

    root: Path
    exclude_dirs: tuple[str, ...] = ()
    label: str = ""  # prefix of the paths when several trees are mined together; default: the root's name
    # Paths relative to root to read instead of walking it (a git repository's tracked files, an
    # installed distribution's files); the folder rules above still apply to them.
    files: tuple[str, ...] | None = None
    source: str = ""  # the name the report and the mix count it under; default: its label


@dataclass(frozen=True)
class Pair:
    """A query and the function it describes."""

    query: str
    function: Function

    def to_row(self) -> dict:
        """The training-row form: ``query``, ``positive`` (the code) and the metadata columns."""
        fn = self.function
        return {
            "query": self.query,
            "positive": fn.code,
            "path": fn.path,
            "line": fn.start_line,
            "name": fn.name,
            "language": fn.language,
            "docstring": fn.docstring or "",
        }


@dataclass
class MiningReport:
    """Counts of one mining run.

    Attributes:
        files: language -> files read and parsed.
        functions: language -> functions extracted (with or without documentation).
        documents: language -> functions kept as corpus documents.
        pairs: language -> (query, code) pairs kept.
        skipped_files: reason (``too_large``, ``binary``, ``not_utf8``, ``unreadable``,
            ``parse_error``, ``too_complex``: nested past the parser's recursion limit) -> files.
        skipped_examples: reason -> the first few paths skipped for it.
        dropped: reason (:data:`CODE_DROPS`, :data:`QUERY_DROPS`) -> functions.
        sources: source name (:attr:`SourceTree.source`) -> ``files``, ``pairs``, ``duplicate``,
            ``near_duplicate`` of that source (a copy counts against the source it was dropped from).
        seconds: wall time of the run.
    """

    files: Counter = field(default_factory=Counter)
    functions: Counter = field(default_factory=Counter)
    documents: Counter = field(default_factory=Counter)
    pairs: Counter = field(default_factory=Counter)
    skipped_files: Counter = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    sources: dict[str, Counter] = field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, reason: str, path: str) -> None:
        """Count a skipped file, remembering the first few paths per reason for the user to look at."""
        self.skipped_files[reason] += 1
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(path)

    def to_dict(self) -> dict:
        """Plain, sorted dicts for ``report.json``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(sorted(value.items())) if isinstance(value, dict) else value
        return out


@dataclass
class MiningResult:
    """Documents (every kept function), pairs (the documented ones among them), in source order."""

    documents: list[Function]
    pairs: list[Pair]
    report: MiningReport
    source_of: dict[str, str] = field(default_factory=dict)  # a kept function's path -> its tree's source name


class SkipFile(Exception):
    """A file the miner does not read; ``args[0]`` is the reason counted in the report."""


def read_source(path: Path, max_bytes: int) -> str:
    """The text of a source file.

    Raises:
        SkipFile: ``too_large``, ``unreadable``, ``binary`` (a NUL byte in the first 8 KiB) or
            ``not_utf8``.
    """
    try:
        if path.stat().st_size > max_bytes:
            raise SkipFile("too_large")
        data = path.read_bytes()
    except OSError:
        raise SkipFile("unreadable") from None
    if b"\x00" in data[:8192]:
        raise SkipFile("binary")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise SkipFile("not_utf8") from None


def source_files(tree: SourceTree) -> Iterator[tuple[Path, str, str]]:
    """(file, path relative to the root, grammar) for each supported file, in sorted order."""
    root = Path(tree.root)
    if root.is_file():
        language = language_for_path(root)
        if language:
            yield root, root.name, language
        return
    excluded = set(ALWAYS_EXCLUDED) | set(tree.exclude_dirs)
    if tree.files is not None:
        for rel in sorted(tree.files):
            parts = rel.split("/")
            language = language_for_path(parts[-1])
            if language and not any(d in excluded or d.startswith(".") for d in parts[:-1]):
                yield root / rel, rel, language
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in excluded and not d.startswith("."))
        for name in sorted(files):
            language = language_for_path(name)
            if language:
                file = Path(folder, name)
                yield file, file.relative_to(root).as_posix(), language


def parsed_files(
    tree: SourceTree | str | os.PathLike,
    config: MiningConfig | None = None,
    report: MiningReport | None = None,
) -> Iterator[tuple[str, str, list[Function]]]:
    """(path relative to the root, text, every function) of each readable, parseable file of a tree.

    Skipped files are counted in ``report`` when given; only ``config.max_file_bytes`` applies
    here (no query or code filters). The text is there for callers that hash files.
    """
    tree = tree if isinstance(tree, SourceTree) else SourceTree(Path(tree))
    config = config or MiningConfig()
    report = report if report is not None else MiningReport()
    for file, rel, grammar in source_files(tree):
        read = _read_file(file, rel, grammar, config)
        if isinstance(read, str):
            report.skip(read, rel)
            continue
        language, text, functions = read
        report.files[language] += 1
        report.functions[language] += len(functions)
        yield rel, text, functions


def _read_file(file: Path, rel: str, grammar: str, config: MiningConfig) -> tuple[str, str, list[Function]] | str:
    """(language, text, every function) of one file, or the reason it is skipped."""
    try:
        text = read_source(file, config.max_file_bytes)
        functions = extract_functions(rel, text, grammar)
    except SkipFile as skip:
        return skip.args[0]
    except ParseError:
        return "parse_error"
    except (RecursionError, MemoryError):  # e.g. a generated one-line sum of 10,000 terms
        return "too_complex"
    return ("typescript" if grammar == "tsx" else grammar), text, functions


def functions_in_tree(
    tree: SourceTree | str | os.PathLike,
    config: MiningConfig | None = None,
    report: MiningReport | None = None,
) -> Iterator[Function]:
    """Every function of every readable, parseable file of a tree (see :func:`parsed_files`)."""
    for _, _, functions in parsed_files(tree, config, report):
        yield from functions


_SECTION = re.compile(
    r"(args|arguments|parameters|params|keyword args|keyword arguments|other parameters|returns?|raises|"
    r"throws|yields?|examples?|notes?|see also|references|attributes|warnings?|todo|usage)\s*:?",
    re.IGNORECASE,
)
_FIELD = re.compile(r"(:\w+|@\w+|\.\. |>>>|```|~~~|#{1,6} )")  # reST fields, JSDoc tags, doctest, markdown
_UNDERLINE = re.compile(r"[-=~]{3,}")  # numpy-style section headers are underlined
_INLINE_TAG = re.compile(r"\{@\w+\s+([^}]*)\}")  # Javadoc/JSDoc {@link Foo} -> Foo
_PARAGRAPH_TAG = re.compile(r"</?p\s*/?>", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")


def docstring_summary(doc: str) -> str:
    """The query a docstring gives: its first paragraph, on one line.

    The paragraph ends at a blank line, a section header (``Args:``, ``Returns``, numpy-style
    underlined headers, markdown ``# Examples``), a field or tag line (``:param``, ``@param``,
    ``.. note::``), a doctest ``>>>`` line or a code fence; everything after is dropped. Javadoc
    inline tags keep their text and HTML tags go; whitespace is collapsed.

        >>> docstring_summary("Parse a config\\n  file.\\n\\nArgs:\\n    path: where")
        'Parse a config file.'
    """
    doc = _PARAGRAPH_TAG.sub("\n\n", _INLINE_TAG.sub(r"\1", doc))
    lines = [line.strip() for line in doc.strip().split("\n")]
    kept: list[str] = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if not line or _SECTION.fullmatch(line) or _FIELD.match(line) or _UNDERLINE.fullmatch(line):
            break
        if _UNDERLINE.fullmatch(following):
            break
        kept.append(line)
    return " ".join(_HTML_TAG.sub("", " ".join(kept)).split())


def _query_or_drop(fn: Function, config: MiningConfig) -> tuple[str | None, str | None]:
    """(query, None) for a usable docstring, else (None, reason)."""
    if not fn.docstring:
        return None, "no_docstring"
    query = docstring_summary(fn.docstring)
    if len(query.split()) < config.min_query_words:
        return None, "short_query"
    if query_is_name(query, fn.name):
        return None, "query_is_name"
    return query, None


def labelled_trees(trees: Sequence[SourceTree]) -> list[SourceTree]:
    """One tree keeps paths relative to its root; several get distinct labels to prefix them with."""
    if len(trees) == 1:
        tree = trees[0]
        return [dataclasses.replace(tree, label="", source=tree.source or tree.label or Path(tree.root).resolve().name)]
    seen: Counter = Counter()
    out = []
    for tree in trees:
        base = tree.label or Path(tree.root).resolve().name or "root"
        seen[base] += 1
        label = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(dataclasses.replace(tree, label=label, source=tree.source or label))
    return out


def mine(
    trees: Sequence[SourceTree | str | os.PathLike], config: MiningConfig | None = None, across_processes: bool = False
) -> MiningResult:
    """Documents and (query, code) pairs from source trees, deduplicated across all of them.

    Args:
        trees: folders or files; plain paths are :class:`SourceTree` with no exclusions. With
            several trees, each path starts with its tree's label (default: the root's name).
        config: filters; :class:`MiningConfig` defaults when None.
        across_processes: every process of a job calls this with the same trees (a collective
            call); each reads, parses and fingerprints every N-th file, the shares are gathered, and
            every process deduplicates them in file order: each gets what one process gets.

    Returns:
        A :class:`MiningResult`; documented functions are offered to the deduplicator first, so
        that of two copies the one that makes a pair survives.
    """
    config = config or MiningConfig()
    start = time.perf_counter()
    report = MiningReport()
    labelled = labelled_trees([t if isinstance(t, SourceTree) else SourceTree(Path(t)) for t in trees])
    for tree in labelled:
        report.sources.setdefault(tree.source, Counter())
    files = ((i, file, rel, grammar) for i, tree in enumerate(labelled) for file, rel, grammar in source_files(tree))
    shared = across_processes and _world_size() > 1
    scans = _scan_shared(list(files), labelled, config) if shared else (_scan(*f, labelled, config) for f in files)
    candidates: list[tuple[Function, str | None, str | None]] = []  # (function, query, why no query)
    fingerprints: list[Fingerprint] = []  # of each candidate, when the processes took them
    source_of: dict[str, str] = {}
    for scan in scans:  # in file order, whichever process read the file
        tree = labelled[scan.tree]
        if scan.skipped:
            report.skip(scan.skipped, scan.rel)
            continue
        report.files[scan.language] += 1
        report.functions[scan.language] += scan.functions
        report.sources[tree.source]["files"] += 1
        source_of[f"{tree.label}/{scan.rel}" if tree.label else scan.rel] = tree.source
        report.dropped.update(scan.dropped)
        candidates += scan.candidates
        fingerprints += scan.fingerprints
    dedup = Deduplicator(config.near_duplicate_threshold)
    kept = []
    for index in sorted(range(len(candidates)), key=lambda i: candidates[i][1] is None):
        fn, _, _ = candidates[index]
        duplicate = dedup.add_fingerprint(fingerprints[index]) if shared else dedup.add(fn.code, fn.name)
        if duplicate:
            report.dropped[duplicate] += 1
            report.sources[source_of[fn.path]][duplicate] += 1
        else:
            kept.append(index)
    documents, pairs = [], []
    for index in sorted(kept):
        fn, query, reason = candidates[index]
        documents.append(fn)
        report.documents[fn.language] += 1
        if query is None:
            report.dropped[reason] += 1
        else:
            pairs.append(Pair(query, fn))
            report.pairs[fn.language] += 1
            report.sources[source_of[fn.path]]["pairs"] += 1
    report.seconds = round(time.perf_counter() - start, 3)
    kept_paths = {fn.path for fn in documents}
    return MiningResult(documents, pairs, report, {p: s for p, s in source_of.items() if p in kept_paths})


@dataclass
class _FileScan:
    """What one file gives the miner, before deduplication: small enough to send to another process."""

    tree: int  # index into the labelled trees
    rel: str
    skipped: str | None = None  # why the file is not read; the rest stays empty
    language: str = ""
    functions: int = 0  # extracted, before any filter
    dropped: Counter = field(default_factory=Counter)  # code drops of the functions that failed the limits
    candidates: list[tuple[Function, str | None, str | None]] = field(default_factory=list)
    fingerprints: list[Fingerprint] = field(default_factory=list)  # per candidate, when asked for


def _scan(
    tree: int, file: Path, rel: str, grammar: str, trees: list[SourceTree], config: MiningConfig, prints: bool = False
) -> _FileScan:
    """One file read, parsed and filtered (``prints``: its candidates' dedup fingerprints taken too)."""
    read = _read_file(file, rel, grammar, config)
    if isinstance(read, str):
        return _FileScan(tree, rel, skipped=read)
    language, _, functions = read
    scan = _FileScan(tree, rel, language=language, functions=len(functions))
    scan.candidates = list(_candidates(functions, trees[tree].label, config, scan.dropped))
    if prints:
        scan.fingerprints = [fingerprint(fn.code, fn.name) for fn, _, _ in scan.candidates]
    return scan


def _scan_shared(files: list[tuple], trees: list[SourceTree], config: MiningConfig) -> list[_FileScan]:
    """Every file's scan, in order: this process scans files ``rank, rank + N, ...``, and all shares are gathered."""
    from trainer.distributed import all_gather_objects, rank, world_size  # torch: only when processes share the work

    n = world_size()
    own = [_scan(*f, trees, config, prints=True) for f in files[rank() :: n]]
    shares = all_gather_objects(own)
    return [shares[i % n][i // n] for i in range(len(files))]


def _world_size() -> int:
    """The processes of a job, without importing torch when none was started (a launcher sets WORLD_SIZE)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1
    from trainer.distributed import world_size

    return world_size()


def _candidates(
    functions: list[Function], label: str, config: MiningConfig, dropped: Counter
) -> Iterator[tuple[Function, str | None, str | None]]:
    """(function with its path prefixed by ``label``, query, why no query) of each function passing the code limits;
    the others counted in ``dropped``."""
    for fn in functions:
        if label:
            fn = dataclasses.replace(fn, path=f"{label}/{fn.path}")
        drop = _code_drop(fn, config)
        if drop:
            dropped[drop] += 1
            continue
        yield (fn, *_query_or_drop(fn, config))


def _code_drop(fn: Function, config: MiningConfig) -> str | None:
    if len(fn.code) > config.max_code_chars:
        return "too_long"
    if code_lines(fn.code) < config.min_code_lines:
        return "short_code"
    return None
