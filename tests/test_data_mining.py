"""Mining pairs from the fixture tree, splitting them by file, the stdlib cache and the ``mine`` CLI."""

import json
from pathlib import Path

import pytest

from trainer.data import DataConfig, load_training_data
from trainer.data.__main__ import main as data_main
from trainer.data.beir import load_beir
from trainer.data.filters import Deduplicator, code_key, query_is_name
from trainer.data.formats import write_jsonl
from trainer.data.languages import extract_functions
from trainer.data.mining import MiningConfig, SourceTree, docstring_summary, functions_in_tree, mine
from trainer.data.splits import SplitConfig, choose_test_groups, split_mined, write_mined
from trainer.data.stdlib import stdlib_dataset
from trainer.errors import CodetuneError, cli_main

TREE = Path(__file__).parent / "fixtures" / "code_tree"

EXPECTED_PAIRS = [
    ("java/Parser.java", 12, "Parser.Parser", "java", "Create a parser over the given source text."),
    ("java/Parser.java", 23, "Parser.countLines", "java", "Count the lines in the text, ignoring a trailing newline."),
    ("pkg/config.py", 7, "load_config", "python", "Read a JSON configuration file and merge it over the defaults."),
    ("pkg/config.py", 24, "parse_port", "python", "Parse a TCP port number given as text, checking its range."),
    ("pkg/config.py", 63, "Settings.get", "python", "Look up a setting by its key, with a default."),
    ("pkg/config.py", 73, "Settings.refresh", "python", "Reload every setting from disk asynchronously."),
    ("pkg/config.py", 83, "Settings.counter", "python", "Build a closure that counts calls made to it."),
    (
        "pkg/copies.py",
        16,
        "summarize_orders",
        "python",
        "Sum the order totals per customer and sort by the largest spender.",
    ),
    ("rust/lib.rs", 8, "words", "rust", "Split a line into whitespace-separated words."),
    ("rust/lib.rs", 19, "Counter.bump", "rust", "Increase the counter by one and return the new value."),
    (
        "server/handlers.go",
        7,
        "NormalizePath",
        "go",
        "NormalizePath cleans a URL path and removes the trailing slash. It never returns an empty string.",
    ),
    ("server/handlers.go", 20, "Server.Route", "go", "Route looks up the handler name registered for a path."),
    ("web/api.js", 6, "fetchUser", "javascript", "Fetch a user record from the API by its id."),
    ("web/api.js", 12, "formatPrice", "javascript", "Format a price in cents as a dollar string."),
    ("web/api.js", 21, "Cart.add", "javascript", "Add an item to the cart, merging quantities."),
    (
        "web/store.ts",
        5,
        "createStore",
        "typescript",
        "Create a store that keeps the latest value of type T. Store objects are never shared.",
    ),
    ("web/store.ts", 14, "Queue.pop", "typescript", "Remove and return the oldest item, or undefined."),
]


@pytest.fixture(scope="module")
def mined():
    return mine([TREE])


def test_pairs_are_exactly_the_documented_functions(mined):
    got = [(p.function.path, p.function.start_line, p.function.name, p.function.language, p.query) for p in mined.pairs]
    assert got == EXPECTED_PAIRS


def test_documents_include_undocumented_functions_but_not_copies(mined):
    names = {(d.path, d.name) for d in mined.documents}
    assert {
        ("pkg/config.py", "no_docs"),
        ("server/handlers.go", "undocumented"),
        ("web/api.js", "plainHelper"),
    } <= names
    # The query-less but long enough functions stay as documents; duplicates and short code do not.
    assert ("pkg/config.py", "save_user_config") in names and ("pkg/config.py", "helper") in names
    assert not names & {
        ("pkg/copies.py", "load_settings"),
        ("pkg/reports.py", "top_customers"),
        ("pkg/config.py", "tiny"),
    }
    assert len(names) == 22


def test_report_counts_skips_and_drops(mined):
    report = mined.report
    assert report.skipped_files == {"binary": 1, "not_utf8": 1, "parse_error": 2}
    assert report.skipped_examples["parse_error"] == ["broken/syntax_error.py", "server/broken.go"]
    assert report.skipped_examples["binary"] == ["broken/archive.js"]
    assert report.dropped == {
        "duplicate": 1,
        "near_duplicate": 1,
        "short_code": 1,
        "no_docstring": 3,
        "query_is_name": 1,
        "short_query": 1,
    }
    assert report.files == {"python": 3, "javascript": 1, "typescript": 1, "go": 1, "java": 1, "rust": 1}
    assert report.pairs == {"python": 6, "javascript": 3, "typescript": 2, "go": 2, "java": 2, "rust": 2}
    assert json.loads(json.dumps(report.to_dict()))["pairs"]["python"] == 6


def test_hidden_and_vendored_folders_are_never_read(mined):
    assert not any(d.path.startswith(("node_modules/", ".hidden/")) for d in mined.documents)


def test_python_code_loses_its_docstring_and_keeps_decorators(mined):
    code = {p.function.name: p.function.code for p in mined.pairs}
    assert code["parse_port"] == (
        "def parse_port(text):\n    port = int(text)\n    if not 0 < port < 65536:\n"
        "        raise ValueError(text)\n    return port"
    )
    assert code["Settings.get"].split("\n")[:3] == [
        "@functools.lru_cache(maxsize=None)",
        "def get(self, key, default=None):",
        "    if key in self.values:",
    ]
    assert "def inner():" in code["Settings.counter"]  # nested functions stay inside their parent
    assert all('"""' not in c for c in code.values())


def test_tree_sitter_code_starts_at_the_function_without_its_doc_comment(mined):
    code = {p.function.name: p.function.code for p in mined.pairs}
    assert code["fetchUser"].startswith("export async function fetchUser(id) {")
    assert code["formatPrice"].startswith("const formatPrice = (cents) => {")
    assert code["Cart.add"] == (
        "add(item) {\n  const found = this.items.find((i) => i.id === item.id);\n"
        "  if (found) found.qty += item.qty;\n  else this.items.push(item);\n}"
    )
    assert code["Counter.bump"].startswith("#[inline]\npub fn bump(&mut self) -> u64 {")
    assert code["Parser.countLines"].startswith("@Override\npublic int countLines() {")
    assert code["Server.Route"].startswith("//go:noinline\nfunc (s *Server) Route(path string) string {")
    assert not any("/**" in c or "///" in c for c in code.values())


def test_extract_functions_returns_every_function():
    text = (TREE / "pkg" / "config.py").read_text()
    functions = extract_functions("pkg/config.py", text, "python")
    assert [f.name for f in functions] == [
        "load_config",
        "parse_port",
        "no_docs",
        "tiny",
        "save_user_config",
        "helper",
        "Settings.get",
        "Settings.refresh",
        "Settings.counter",
    ]
    no_docs = functions[2]
    assert (no_docs.start_line, no_docs.end_line, no_docs.docstring) == (36, 39, None)
    assert functions[0].docstring.startswith("Read a JSON configuration file and merge it over the defaults.\n\nArgs:")


def test_extract_functions_raises_on_bad_syntax():
    from trainer.data.languages import ParseError

    with pytest.raises(ParseError):
        extract_functions("x.go", "package x\nfunc Broken( {\n", "go")


def test_functions_in_tree_is_the_indexers_view():
    functions = list(functions_in_tree(TREE))
    assert len(functions) == 25  # every function of every readable file, no filters
    assert ("pkg/config.py", "tiny") in {(f.path, f.name) for f in functions}


@pytest.mark.parametrize(
    "doc, query",
    [
        ("Parse it.\n\nArgs:\n    x: y", "Parse it."),
        ("One line\n   continued here.\nReturns:\n  z", "One line continued here."),
        ("Compute things.\nParameters\n----------\nx", "Compute things."),
        ("Do a thing.\n:param x: the x", "Do a thing."),
        ("Square it.\n>>> sq(2)\n4", "Square it."),
        ("Adds one.\n\n# Examples\n```\nadd(1)\n```", "Adds one."),
        ("See {@link Foo} and {@code bar()}.<p>More.", "See Foo and bar()."),
        ("Fetch it.\n@param {string} id", "Fetch it."),
        ("\n\n   Leading blank lines are skipped.  ", "Leading blank lines are skipped."),
    ],
)
def test_docstring_summary(doc, query):
    assert docstring_summary(doc) == query


def test_query_is_name():
    assert query_is_name("Load the user config.", "Settings.load_user_config")
    assert query_is_name("parse HTTP header", "parseHTTPHeader")
    assert not query_is_name("Load the user config from disk.", "load_user_config")


def test_deduplicator_exact_renamed_and_near():
    dedup = Deduplicator(threshold=0.85)
    body = "    total = 0\n    for x in items:\n        total += x * x\n    return total\n"
    assert dedup.add(f"def squares(items):\n{body}", "squares") is None
    assert dedup.add(f"def  squares(items) :\n{body}", "squares") == "duplicate"
    assert dedup.add(f"def sum_sq(items):\n{body}", "sum_sq") == "duplicate"  # renamed copy
    assert dedup.add("def other(a):\n    return {k: v for k, v in a.items() if v}\n", "other") is None
    assert code_key("a  =  1") == code_key("a = 1") != code_key("a = 2")


def test_file_size_limit_is_a_counted_skip(tmp_path):
    (tmp_path / "big.py").write_text("def f():\n    '''Doc of a big file.'''\n    return 1\n" + "# pad\n" * 100)
    report = mine([tmp_path], MiningConfig(max_file_bytes=100)).report
    assert report.skipped_files == {"too_large": 1}


def test_a_generated_file_past_the_recursion_limit_is_a_counted_skip(tmp_path):
    """The probe's file: one line summing 20,000 ones. Mining (and so indexing and training) goes on."""
    (tmp_path / "gen.py").write_text("X = " + "+".join(["1"] * 20000) + "\n")
    (tmp_path / "ok.py").write_text('def f(a, b):\n    """Add two numbers together."""\n    c = a + b\n    d = c\n    return d\n')
    result = mine([tmp_path])
    assert result.report.skipped_files == {"too_complex": 1}
    assert [p.function.name for p in result.pairs] == ["f"]


def test_several_trees_get_labelled_paths(tmp_path):
    result = mine([SourceTree(TREE / "web"), SourceTree(TREE / "rust", label="crate")])
    assert {p.function.path for p in result.pairs} == {"web/api.js", "web/store.ts", "crate/lib.rs"}


# ---------------------------------------------------------------- splits


def test_split_keeps_every_file_on_one_side(mined):
    split = split_mined(mined, SplitConfig(test_fraction=0.5, seed=3))
    train_files = {p.function.path for p in split.train}
    test_files = {d.path for d in split.test_documents}
    assert train_files and test_files and not train_files & test_files
    assert {p.function.path for p in split.test} <= test_files
    assert len(split.train) + len(split.test) == len(mined.pairs)


def test_split_is_deterministic_and_seeded(mined):
    def test_files(seed):
        return sorted({d.path for d in split_mined(mined, SplitConfig(test_fraction=0.5, seed=seed)).test_documents})

    assert test_files(0) == test_files(0)
    assert len({tuple(test_files(s)) for s in range(6)}) > 1


def test_split_by_folder(mined):
    split = split_mined(mined, SplitConfig(test_fraction=0.5, seed=1, group_by="folder"))
    train_folders = {p.function.path.split("/")[0] for p in split.train}
    test_folders = {d.path.split("/")[0] for d in split.test_documents}
    assert train_folders and test_folders and not train_folders & test_folders


def test_choose_test_groups_cap_and_minimum():
    counts = {"a/x.py": 5, "a/y.py": 5, "b/z.py": 5, "c/w.py": 5}
    capped = choose_test_groups(counts, SplitConfig(test_fraction=0.99, max_test_queries=10))
    assert sum(counts[g] for g in capped) == 10
    assert choose_test_groups({"only.py": 3}, SplitConfig(test_fraction=1e-9)) == set()
    assert choose_test_groups({"a.py": 1, "b.py": 1}, SplitConfig(test_fraction=0.0)) == set()
    # A tiny fraction still holds out one group, so that a small tree has a test set.
    assert len(choose_test_groups({"a.py": 1, "b.py": 1}, SplitConfig(test_fraction=1e-9))) == 1


def test_split_config_errors_name_the_field():
    with pytest.raises(CodetuneError, match="test_fraction"):
        SplitConfig(test_fraction=1.5)
    with pytest.raises(CodetuneError, match="group_by"):
        SplitConfig(group_by="repo")


def test_written_split_loads_as_beir(mined, tmp_path):
    split = split_mined(mined, SplitConfig(test_fraction=0.5, seed=3))
    summary = write_mined(tmp_path, split, mined.report, SplitConfig(test_fraction=0.5, seed=3))
    data = load_beir(tmp_path / "test")
    assert len(data.queries) == len(split.test) == summary["split"]["test_queries"]
    assert len(data.corpus) == len(split.test_documents)
    for qid, docs in data.qrels.items():
        (doc,) = docs
        assert data.queries[qid] not in data.corpus[doc]["text"]  # the docstring is not in the document
        assert data.corpus[doc]["title"] == ""
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == len(split.train)
    assert set(rows[0]) == {"query", "positive", "path", "line", "name", "language", "docstring"}
    assert json.loads((tmp_path / "report.json").read_text())["mining"]["pairs"]["python"] == 6


# ---------------------------------------------------------------- default dataset and recipes' entry point


def test_stdlib_dataset_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    split = SplitConfig(test_fraction=0.5, seed=3)
    train, test_dir = stdlib_dataset(split=split, root=TREE)
    assert test_dir is not None and test_dir.parent.parent == tmp_path / "cache"
    assert test_dir.parent.name.startswith("stdlib-")
    stamp = (test_dir.parent / "report.json").stat().st_mtime_ns
    again, _ = stdlib_dataset(split=split, root=TREE)
    assert (test_dir.parent / "report.json").stat().st_mtime_ns == stamp
    assert again["query"] == train["query"]
    _, other_dir = stdlib_dataset(split=SplitConfig(test_fraction=0.5, seed=4), root=TREE)
    assert other_dir.parent != test_dir.parent


def test_load_training_data_from_a_tree(tmp_path):
    data = load_training_data(DataConfig(source=str(TREE), test_fraction=0.5, seed=3), tmp_path)
    beir = load_beir(data.eval_dir)
    assert len(data.train) + len(beir.queries) == len(EXPECTED_PAIRS)
    assert set(data.train.column_names) == {"query", "positive", "path", "line", "name", "language", "docstring"}


def test_load_training_data_mixes_sources(tmp_path):
    rows = [
        {"query": f"question number {i}", "positive": f"def f{i}():\n    return {i}", "path": f"f{i}.py"}
        for i in range(6)
    ]
    write_jsonl(tmp_path / "mine.jsonl", rows)
    config = DataConfig(source=[str(TREE), str(tmp_path / "mine.jsonl")], test_fraction=0.5, seed=3, max_train_pairs=5)
    data = load_training_data(config, tmp_path / "run")
    assert len(data.train) == 5
    beir = load_beir(data.eval_dir)
    assert data.eval_dir == tmp_path / "run" / "data" / "eval"
    assert {q.split("-")[0] for q in beir.queries} == {"s0", "s1"}


def test_load_training_data_errors_name_the_field(tmp_path):
    with pytest.raises(CodetuneError, match=r"data\.source"):
        load_training_data(DataConfig(source=str(tmp_path / "missing")), tmp_path)
    with pytest.raises(CodetuneError, match=r"data\.test_fraction"):
        DataConfig(test_fraction=2.0)
    with pytest.raises(CodetuneError, match=r"data\.hard_negatives"):
        load_training_data(DataConfig(source=str(TREE), hard_negatives=2), tmp_path)


# ---------------------------------------------------------------- CLI


def test_mine_cli_writes_the_folder(tmp_path, capsys):
    out = tmp_path / "mined"
    assert data_main(["mine", str(TREE), "--out", str(out), "--test-fraction", "0.5", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "python" in printed and "parse_error 2" in printed
    assert (out / "train.jsonl").is_file() and (out / "report.json").is_file()
    load_beir(out / "test")


def test_mine_cli_error_is_one_line(tmp_path, capsys):
    assert cli_main(data_main, ["mine", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and err.count("\n") == 1
