"""Code search: index a tree, query it every way, update it incrementally, store it at every precision, export to Chroma."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.errors import CodetuneError
from trainer.retrieval import encode, normalize_truncate, top_k
from trainer.search import build_index, document_text, export_chroma, load_index, main, search
from trainer.search.dense import DenseIndex, bytes_per_vector, calibrate, quantize
from trainer.search.lexical import tokens
from trainer.search.query import rrf

ROOT = Path(__file__).resolve().parents[1]
CODE_TREE = Path(__file__).parent / "fixtures" / "code_tree"
QUERIES = ["parse the port number", "load the configuration file", "save the user config", "top customers by orders"]


@pytest.fixture(scope="module")
def model():
    from trainer.models import load_model

    return load_model("default")


@pytest.fixture
def tree(tmp_path) -> Path:
    """pkg/ (3 Python files) and web/ (JS + TS) copied from the miner's fixture tree."""
    root = tmp_path / "src"
    for sub in ("pkg", "web"):
        shutil.copytree(CODE_TREE / sub, root / sub)
    return root


@pytest.fixture
def index(tree, tmp_path, model) -> Path:
    out = tmp_path / "index"
    build_index([tree], out, "default", model=model, dim=128, show_progress=False)
    return out


def test_index_and_query_find_the_function_at_its_line(index, model, capsys):
    idx = load_index(index)
    assert idx.dim == 128 and idx.manifest["model"] == "default" and idx.embeddings.shape == (len(idx.snippets), 128)
    hit = search(idx, ["parse the port number"], model, k=3)[0][0]
    assert (hit.snippet.path, hit.snippet.start_line, hit.snippet.name) == ("pkg/config.py", 24, "parse_port")

    assert main(["query", str(index), "parse the port number", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 5
    assert {k: hits[0][k] for k in ("path", "line", "name", "language")} == {
        "path": "pkg/config.py",
        "line": 24,
        "name": "parse_port",
        "language": "python",
    }
    assert hits[0]["code"].startswith("def parse_port(text):") and hits[0]["end_line"] >= 24

    assert main(["query", str(index), "parse the port number", "-k", "1"]) == 0
    assert "pkg/config.py:24" in capsys.readouterr().out


def test_query_json_is_the_only_thing_on_stdout(index):
    """Through the real CLI, with W&B offline: transformers prints a notice on import that must not land there."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "trainer.search", "query", str(index), "parse the port number", "--json", "-k", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [h["name"] for h in json.loads(proc.stdout)][0] == "parse_port"


def test_reindex_encodes_only_the_changed_file(tree, index, model):
    before = load_index(index)
    untouched = {s.id: row for s, row in zip(before.snippets, before.embeddings) if s.path != "pkg/reports.py"}
    reports = tree / "pkg" / "reports.py"
    reports.write_text(reports.read_text() + "\n\ndef added_function(x):\n    return x + 1\n")
    expected = sum(1 for s in before.snippets if s.path == "pkg/reports.py") + 1

    stats = build_index([tree], index, "default", model=model, dim=128, show_progress=False)
    assert (stats.encoded, stats.reused) == (expected, len(before.snippets) + 1 - expected)

    after = load_index(index)
    assert len(after.snippets) == len(before.snippets) + 1
    assert any(s.name == "added_function" for s in after.snippets)
    for s, row in zip(after.snippets, after.embeddings):
        if s.id in untouched:
            np.testing.assert_array_equal(row, untouched[s.id])

    stats = build_index([tree], index, "default", model=model, dim=128, show_progress=False)
    assert (stats.encoded, stats.reused) == (0, len(after.snippets))


def test_another_model_at_the_same_path_is_never_served_stale_vectors(tree, tmp_path, model):
    """Reuse is keyed on the weights, not the folder name: a folder that now holds another model re-encodes."""
    folder = tmp_path / "my-model"
    model.save(str(folder))
    index = tmp_path / "index"
    build_index([tree], index, str(folder), dim=128, show_progress=False)
    from trainer.models import load_model

    other = load_model(str(folder))
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.02 * torch.randn_like(p))
    other.save(str(folder))  # same path, other weights

    stale = load_index(index)
    with pytest.raises(CodetuneError, match="built with other weights"):
        search(stale, QUERIES, load_model(str(folder)))
    stats = build_index([tree], index, str(folder), dim=128, show_progress=False)
    assert stats.reused == 0 and stats.encoded == len(stale.snippets)
    assert search(load_index(index), QUERIES, load_model(str(folder)), k=1)[0]


def test_scores_equal_the_shared_top_k(index, model):
    idx = load_index(index)
    hits = search(idx, QUERIES, model, k=4, mode="dense")
    compute = idx.manifest["compute"]  # bf16 on a CPU or GPU that has it: queries are encoded as documents were
    docs = normalize_truncate(encode(model, [document_text(s) for s in idx.snippets], "document", compute=compute), 128)
    queries = normalize_truncate(encode(model, QUERIES, "query", compute=compute), 128)
    scores, ids = top_k(queries, docs, k=4)
    for row, srow, irow in zip(hits, scores, ids):
        torch.testing.assert_close(torch.tensor([h.score for h in row]), srow, atol=1e-5, rtol=0)
        assert [h.snippet.id for h in row] == [idx.snippets[i].id for i in irow.tolist()]


def test_bf16_compute_is_recorded_close_to_fp32_and_never_mixed_with_it(tree, tmp_path, model):
    """bf16 autocast really runs (the vectors differ from fp32's), stays within rounding of them, and finds
    the same function; an index is never updated with vectors of the other arithmetic."""
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    build_index([tree], fp32, "default", model=model, dim=128, compute="fp32", show_progress=False)
    stats = build_index([tree], bf16, "default", model=model, dim=128, compute="bf16", show_progress=False)
    a, b = load_index(fp32), load_index(bf16)
    assert (a.manifest["compute"], b.manifest["compute"]) == ("fp32", "bf16")
    cos = (a.embeddings * b.embeddings).sum(axis=1)  # unit rows, same snippet order
    assert not np.array_equal(a.embeddings, b.embeddings) and cos.min() > 0.999, cos.min()
    assert search(b, ["parse the port number"], model, k=1)[0][0].snippet.name == "parse_port"

    again = build_index([tree], bf16, "default", model=model, dim=128, compute="fp32", show_progress=False)
    assert again.encoded == stats.snippets and again.reused == 0
    np.testing.assert_array_equal(load_index(bf16).embeddings, a.embeddings)

    manifest = json.loads((fp32 / "manifest.json").read_text())
    del manifest["compute"]  # an index from before the key: its vectors were fp32
    (fp32 / "manifest.json").write_text(json.dumps(manifest))
    old = build_index([tree], fp32, "default", model=model, dim=128, compute="fp32", show_progress=False)
    assert old.encoded == 0 and old.reused == stats.snippets


def test_max_tokens_cuts_documents_is_recorded_and_never_mixed(tree, tmp_path, model):
    """--max-tokens encodes each function cut at N tokens (its vector is the model's at that limit), the
    manifest keeps N, an update at another limit re-encodes everything."""
    from trainer.models import load_model

    out = tmp_path / "short"
    build_index([tree], out, "default", dim=128, compute="fp32", max_tokens=16, show_progress=False)
    idx = load_index(out)
    assert idx.max_tokens == 16 and idx.manifest["max_tokens"] == 16
    assert main(["query", str(out), "parse the port number", "--json"]) == 0  # the model loads at the index's limit
    cut = load_model("default", max_seq_length=16)
    expected = normalize_truncate(encode(cut, [document_text(s) for s in idx.snippets], "document", compute="fp32"), 128)
    np.testing.assert_allclose(idx.embeddings, expected.numpy(), atol=1e-5)
    full = normalize_truncate(encode(model, [document_text(s) for s in idx.snippets], "document", compute="fp32"), 128)
    assert not np.allclose(idx.embeddings, full.numpy(), atol=1e-3)  # the fixture's functions are longer than 16 tokens

    same = build_index([tree], out, "default", dim=128, compute="fp32", max_tokens=16, show_progress=False)
    assert same.unchanged and same.encoded == 0
    other = build_index([tree], out, "default", dim=128, compute="fp32", show_progress=False)
    assert other.encoded == other.snippets and other.reused == 0 and load_index(out).max_tokens is None
    np.testing.assert_allclose(load_index(out).embeddings, full.numpy(), atol=1e-5)
    with pytest.raises(CodetuneError, match="max_tokens 16: the model given cuts at 256 tokens"):
        build_index([tree], out, "default", model=model, dim=128, max_tokens=16, show_progress=False)


def test_query_with_another_model_or_dim_is_an_error(index, tiny_bert, capsys):
    from trainer.models import load_model

    idx = load_index(index)
    with pytest.raises(CodetuneError, match=r"built with default at dim 128; queried with .* at dim 128"):
        idx.check_model(str(tiny_bert))
    with pytest.raises(CodetuneError, match=r"built with default at dim 128; queried with default at dim 64"):
        idx.check_model("default", 64)
    with pytest.raises(CodetuneError, match="queried with a model of dimension 32"):
        search(idx, ["x"], load_model(str(tiny_bert), preset="bge"), k=1)

    from trainer.errors import cli_main

    capsys.readouterr()
    assert cli_main(main, ["query", str(index), "x", "--model", str(tiny_bert)]) == 2
    assert capsys.readouterr().err.startswith(f"error: index {index} built with default at dim 128; queried with")


def test_tiny_model_dim_defaults_to_its_width(tree, tmp_path, tiny_bert):
    from trainer.models import load_model

    tiny = load_model(str(tiny_bert), preset="bge")
    out = tmp_path / "tiny-index"
    build_index([tree], out, str(tiny_bert), model=tiny, show_progress=False)
    assert load_index(out).dim == 32
    with pytest.raises(CodetuneError, match="--dim 64: must be between 1 and the model's dimension 32"):
        build_index([tree], out, str(tiny_bert), model=tiny, dim=64, show_progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_url(tmp_path):
    """A real ``chroma run`` server on a free localhost port, stopped at teardown."""
    pytest.importorskip("chromadb", reason="chromadb is not installed (pip install chromadb)")
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    if not Path(exe).exists():
        pytest.skip("the `chroma` command is not installed")
    port = _free_port()
    url = f"http://localhost:{port}"
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "chroma-server"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chroma server did not answer on {url} (exit code {proc.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_chroma_server_and_faiss_agree_on_top_k(index, model, chroma_url):
    idx = load_index(index)
    coll = export_chroma(idx, url=chroma_url, collection="codetune-test")
    assert coll.count() == len(idx.snippets)
    assert coll.configuration_json["hnsw"]["space"] == "cosine"

    k = 5
    queries = normalize_truncate(encode(model, QUERIES, "query"), idx.dim).numpy()  # (Q, dim)
    scores, ids = idx.faiss_index.search(queries, k)
    got = coll.query(query_embeddings=queries, n_results=k, include=["distances", "metadatas"])
    for q in range(len(QUERIES)):
        assert got["ids"][q] == [idx.snippets[i].id for i in ids[q]]
        np.testing.assert_allclose(1 - np.array(got["distances"][q]), scores[q], atol=1e-5)
    assert got["metadatas"][0][0]["path"] == idx.snippets[ids[0][0]].path


def test_chroma_reexport_drops_stale_ids(tree, index, model, tmp_path):
    pytest.importorskip("chromadb", reason="chromadb is not installed (pip install chromadb)")
    store = tmp_path / "chroma"
    export_chroma(load_index(index), path=store)
    (tree / "web" / "api.js").unlink()
    build_index([tree], index, "default", model=model, dim=128, show_progress=False)
    idx = load_index(index)
    coll = export_chroma(idx, path=store)
    assert coll.name == "index"
    assert sorted(coll.get(include=[])["ids"]) == sorted(s.id for s in idx.snippets)


def test_cli_errors_name_the_flag(tmp_path, capsys):
    from trainer.errors import cli_main

    assert cli_main(main, ["query", str(tmp_path), "x"]) == 2
    assert "not a search index" in capsys.readouterr().err
    assert cli_main(main, ["index", str(tmp_path / "missing"), "--out", str(tmp_path / "i")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert cli_main(main, ["index", str(tmp_path), "--out", str(tmp_path / "i"), "--store", "chroma"]) == 2
    assert "exactly one of --chroma-path or --chroma-url" in capsys.readouterr().err


# ---------------------------------------------------------------- what is indexed


def test_the_index_keeps_docstrings_and_context_the_miner_strips(index, tree, model):
    """Words only the docstring holds ("TCP") find the function; the code is the file's own lines."""
    from trainer.data.mining import functions_in_tree

    idx = load_index(index)
    port = next(s for s in idx.snippets if s.name == "parse_port")
    lines = (tree / "pkg" / "config.py").read_text().split("\n")
    assert port.code.split("\n") == lines[port.start_line - 1 : port.end_line]
    assert document_text(port).startswith("pkg.config: parse_port\ndef parse_port(text):\n    \"\"\"Parse a TCP port")
    for mode in ("lexical", "hybrid", "dense"):
        assert search(idx, ["tcp port"], model, k=1, mode=mode)[0][0].snippet.name == "parse_port", mode

    # A method's code is dedented as the miner's is; an undocumented function's code is the miner's.
    mined = {f.name: f for f in functions_in_tree(tree)}
    by_name = {s.name: s for s in idx.snippets}
    assert by_name["no_docs"].code == mined["no_docs"].code
    assert by_name["Settings.get"].code.startswith("@functools.lru_cache(maxsize=None)\ndef get(self, key")
    ts = next(s for s in idx.snippets if s.language == "typescript" and s.doc)
    assert ts.doc in document_text(ts) and ts.doc not in ts.code  # a JSDoc block above the code is indexed too


def _edit_add_and_delete(tree: Path) -> None:
    """One file gains a function, one loses its words for good (deleted), one is new."""
    reports = tree / "pkg" / "reports.py"
    reports.write_text(reports.read_text() + "\n\ndef zebra_quota_added(x):\n    return x + 1\n")
    (tree / "web" / "api.js").unlink()
    (tree / "pkg" / "fresh.py").write_text("def load_user_settings(path):\n    return open(path).read()\n")


def _vocab(index) -> list[str]:
    from trainer.search.lexical import TokenIds

    return TokenIds.load(index.folder / index.manifest["generation"] / "bm25").vocab


def test_reindex_after_edits_equals_a_build_from_scratch(tree, tmp_path, tiny_bert, monkeypatch):
    """Same snippets, vectors, BM25 scores and hits; only the changed files' documents are tokenized again."""
    import trainer.search.lexical as lexical
    from trainer.models import load_model

    tiny = load_model(str(tiny_bert), preset="bge")
    updated, scratch = tmp_path / "updated", tmp_path / "scratch"
    build_index([tree], updated, "tiny", model=tiny, show_progress=False)
    _edit_add_and_delete(tree)
    tokenized = []
    real = lexical.tokens
    monkeypatch.setattr(lexical, "tokens", lambda text, stop=None: tokenized.append(text) or real(text, stop))
    stats = build_index([tree], updated, "tiny", model=tiny, show_progress=False)
    new_files = {"pkg/reports.py", "pkg/fresh.py"}
    a = load_index(updated)
    assert sorted(tokenized) == sorted(document_text(s) for s in a.snippets if s.path in new_files)
    assert stats.encoded == len(tokenized) and stats.reused == len(a.snippets) - len(tokenized) > 0
    monkeypatch.undo()

    build_index([tree], scratch, "tiny", model=tiny, show_progress=False)
    b = load_index(scratch)
    assert [s.id for s in a.snippets] == [s.id for s in b.snippets]
    np.testing.assert_allclose(a.dense.vectors, b.dense.vectors, atol=1e-5)  # other batches, other padding
    vocab = _vocab(a)
    assert sorted(vocab) == sorted(_vocab(b))
    assert {"zebra", "quota"} <= set(vocab) and "cart" not in vocab  # "cart": a word of the deleted api.js only
    queries = [*QUERIES, "zebra quota", "fetch the user api", "load user settings"]
    for q in queries:
        np.testing.assert_array_equal(a.lexical.scores(q), b.lexical.scores(q))
    for mode in ("dense", "lexical", "hybrid"):
        got, want = search(a, queries, tiny, k=5, mode=mode), search(b, queries, tiny, k=5, mode=mode)
        assert [[h.snippet.id for h in hits] for hits in got] == [[h.snippet.id for h in hits] for hits in want], mode


def test_files_read_in_worker_processes_give_the_index_read_in_one(tree, tmp_path, tiny_bert, monkeypatch):
    """A large tree's files are parsed by spawned workers: same snippets, records, vectors and skips, in order."""
    import trainer.search.build as build
    from trainer.models import load_model

    (tree / "pkg" / "broken.py").write_text("def half(:\n    return\n")
    tiny = load_model(str(tiny_bert), preset="bge")
    serial = build_index([tree], tmp_path / "serial", "tiny", model=tiny, show_progress=False)
    monkeypatch.setattr(build, "PARALLEL_FILES", 1)  # a process per core from two files on
    spawned = []
    pool = build.ProcessPoolExecutor
    monkeypatch.setattr(build, "ProcessPoolExecutor", lambda *a, **k: spawned.append(a) or pool(*a, **k))
    parallel = build_index([tree], tmp_path / "parallel", "tiny", model=tiny, show_progress=False)
    assert spawned, "the workers never ran"
    a, b = load_index(tmp_path / "serial"), load_index(tmp_path / "parallel")
    assert serial.skipped_files == parallel.skipped_files == {"parse_error": 1}
    assert [s.id for s in a.snippets] == [s.id for s in b.snippets] and a.snippets == b.snippets
    assert a.files == b.files and len(a.files) == serial.files == 5
    np.testing.assert_array_equal(a.dense.vectors, b.dense.vectors)


def test_an_index_without_token_ids_is_tokenized_again_on_update(tree, tmp_path, tiny_bert, monkeypatch):
    """As one written before they were kept: it still loads, and its next update tokenizes every document."""
    import trainer.search.lexical as lexical
    from trainer.models import load_model

    tiny = load_model(str(tiny_bert), preset="bge")
    out = tmp_path / "index"
    build_index([tree], out, "tiny", model=tiny, show_progress=False)
    before = load_index(out)
    want = {q: before.lexical.scores(q) for q in QUERIES}
    for name in (lexical.TOKEN_IDS, lexical.TOKEN_OFFSETS, lexical.VOCAB):
        (out / before.manifest["generation"] / "bm25" / name).unlink()
    assert load_index(out).lexical.scores(QUERIES[0]).shape == (len(before.snippets),)
    tokenized = []
    real = lexical.tokens
    monkeypatch.setattr(lexical, "tokens", lambda text, stop=None: tokenized.append(text) or real(text, stop))
    stats = build_index([tree], out, "tiny", model=tiny, show_progress=False)
    assert stats.encoded == 0 and len(tokenized) == len(before.snippets)
    after = load_index(out)
    for q in QUERIES:
        np.testing.assert_array_equal(after.lexical.scores(q), want[q])


def test_bm25_from_token_ids_scores_as_bm25s_over_the_tokens():
    """The reference: bm25s indexing the token lists itself, as the index did before it kept token ids."""
    import bm25s

    from trainer.search.lexical import LexicalIndex

    texts = [document_text(s) for s in _fixture_snippets()]
    ours = LexicalIndex.build(texts)
    ref = bm25s.BM25()
    ref.index([tokens(t) for t in texts], show_progress=False)
    for q in ["parse the port number", "config file", "user", "zzz"]:
        np.testing.assert_array_equal(ours.scores(q), np.asarray(ref.get_scores(tokens(q)), np.float32))


def _fixture_snippets():
    """Every function of the fixture tree as snippets, without building an index."""
    from trainer.data.mining import parsed_files
    from trainer.search.snippets import file_snippets

    return [s for rel, text, fns in parsed_files(CODE_TREE) for s in file_snippets(rel, text, fns, "")]


def test_tokens_split_identifiers_and_fold_plurals():
    assert tokens("def parseHTTPDate(get_app_dir, files): return entries") == [
        "def", "parse", "http", "date", "parsehttpdate", "get", "app", "dir", "get_app_dir", "file", "return", "entry",
    ]
    assert tokens("the class is a process") == ["class", "process"]  # stopwords go; "class"/"process" keep their s


def test_rrf_by_hand():
    fused = rrf([[7, 3, 5], [3, 9]], k=60)
    assert [doc for doc, _ in fused] == [3, 7, 9, 5]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61) and fused[1][1] == pytest.approx(1 / 61)


# ---------------------------------------------------------------- precision


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "binary"])
def test_each_precision_searches_exactly_what_it_stores(precision):
    """FAISS scores equal a numpy reference over the stored rows (binary: Hamming candidates, then float rescoring)."""
    from sentence_transformers.util.quantization import quantize_embeddings

    docs, queries, k = _unit(300, 64, 0), _unit(7, 64, 1), 10
    ranges = calibrate(docs)
    vectors = quantize(docs, precision, ranges)
    assert vectors.nbytes == 300 * bytes_per_vector(64, precision)
    index = DenseIndex(precision, 64, vectors, ranges if precision == "int8" else None)
    scores, ids = index.search(queries, k)

    if precision == "binary":
        # Rescored: each hit's score is the float query against its +-1 vector / sqrt(64), best first ...
        rescored = queries @ np.where(docs > 0, 1.0, -1.0).astype(np.float32).T / 8.0  # (Q, N)
        np.testing.assert_allclose(scores, np.take_along_axis(rescored, ids, 1), atol=1e-5)
        assert (np.diff(scores, axis=1) <= 0).all()
        # ... among the 4k nearest by Hamming: every doc strictly inside the cut that beats the k-th hit is a hit.
        hamming = ((queries > 0)[:, None, :] != (docs > 0)[None, :, :]).sum(-1)  # (Q, N)
        cut = np.sort(hamming, axis=1)[:, 4 * k - 1 : 4 * k]
        assert (np.take_along_axis(hamming, ids, 1) <= cut).all()
        must = (hamming < cut) & (rescored > scores[:, -1:] + 1e-6)
        assert all(set(np.flatnonzero(must[q])) <= set(ids[q]) for q in range(len(queries)))
    else:
        stored = {"float32": docs, "float16": docs.astype(np.float16).astype(np.float32)}.get(precision)
        if precision == "int8":  # each code's bucket midpoint, from sentence-transformers' codes
            codes = quantize_embeddings(docs, "int8", ranges=ranges).astype(np.float32)
            stored = ranges[0] + (codes + 128.5) * ((ranges[1] - ranges[0]) / 255)
        ref = queries @ stored.T
        ref_ids = np.argsort(-ref, axis=1, kind="stable")[:, :k]
        np.testing.assert_allclose(scores, np.take_along_axis(ref, ref_ids, 1), atol=1e-4)
        assert (ids[:, :3] == ref_ids[:, :3]).all()

    rows = np.arange(0, 300, 3)
    _, sub = index.search(queries, k, rows)
    assert set(sub.ravel()) <= set(rows)


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_quantized_index_on_disk_is_its_bytes_and_reuses_its_codes(tree, tmp_path, model, precision):
    out = tmp_path / "index"
    build_index([tree], out, "default", model=model, dim=128, precision=precision, show_progress=False)
    idx = load_index(out)
    assert idx.precision == precision and idx.dense.vectors.nbytes == len(idx.snippets) * bytes_per_vector(128, precision)
    assert search(idx, ["parse the port number"], model, k=1, mode="dense")[0][0].snippet.name == "parse_port"
    before = idx.dense.vectors.copy()
    stats = build_index([tree], out, "default", model=model, dim=128, precision=precision, show_progress=False)
    assert stats.encoded == 0
    np.testing.assert_array_equal(load_index(out).dense.vectors, before)


# ---------------------------------------------------------------- querying


def test_filters_by_language_and_path(index, model):
    idx = load_index(index)
    ts = search(idx, ["load the configuration file"], model, k=20, languages=["typescript"])[0]
    assert ts and {h.snippet.language for h in ts} == {"typescript"}
    web = search(idx, ["load the configuration file"], model, k=20, path_glob="web/*")[0]
    assert web and all(h.snippet.path.startswith("web/") for h in web)
    assert search(idx, ["x"], model, k=3, path_glob="nowhere/*")[0] == []


def test_cli_prints_path_line_name_score_and_a_preview(index, capsys):
    assert main(["query", str(index), "parse the port number", "-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pkg/config.py:24  parse_port  0.0")
    assert out[1].split() == ["24", "def", "parse_port(text):"]
    assert [line.split()[0] for line in out[1:5]] == ["24", "25", "26", "27"] and "more lines (--full)" in out[5]

    assert main(["query", str(index), "parse the port number", "-k", "1", "--full", "--mode", "dense"]) == 0
    full = capsys.readouterr().out.splitlines()
    assert full[0].startswith("pkg/config.py:24  parse_port  0.") and full[-1].split() == ["33", "return", "port"]


def test_nothing_matches_exits_1(index, capsys):
    assert main(["query", str(index), "zzqx wvvy", "--mode", "lexical"]) == 1
    assert "no results" in capsys.readouterr().err
    assert main(["query", str(index), "zzqx wvvy", "--mode", "lexical", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == []
    assert main(["query", str(index), "port", "--path-glob", "nowhere/*"]) == 1


# ---------------------------------------------------------------- the folder on disk


def test_a_failed_build_leaves_the_old_index_as_it_was(tree, index, model, monkeypatch):
    """A crash after most of the new generation is written (here: in the BM25 save) changes nothing users see."""
    from trainer.search.lexical import LexicalIndex

    before = load_index(index)
    names = sorted(p.name for p in index.iterdir())
    (tree / "pkg" / "reports.py").write_text("def brand_new():\n    return 1\n")

    def crash(self, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(LexicalIndex, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index([tree], index, "default", model=model, dim=128, show_progress=False)
    after = load_index(index)
    assert [s.id for s in after.snippets] == [s.id for s in before.snippets]
    np.testing.assert_array_equal(after.dense.vectors, before.dense.vectors)
    assert sorted(p.name for p in index.iterdir()) == names  # the half-written generation is gone
    assert search(after, ["parse the port number"], model, k=1)[0][0].snippet.name == "parse_port"

    monkeypatch.undo()
    (index / "g-left-by-a-killed-build").mkdir()
    build_index([tree], index, "default", model=model, dim=128, show_progress=False)
    assert [p.name for p in index.iterdir() if p.name.startswith("g-")] == [load_index(index).manifest["generation"]]
    assert any(s.name == "brand_new" for s in load_index(index).snippets)


def test_unchanged_files_are_not_even_read_again(tree, index, model):
    import trainer.data.mining as mining

    past = time.time() - 3600
    for f in tree.rglob("*"):
        os.utime(f, (past, past))
    build_index([tree], index, "default", model=model, dim=128, show_progress=False)  # records the old mtimes
    reads = []
    real = mining.read_source
    mining.read_source = lambda path, limit: reads.append(path) or real(path, limit)
    try:
        stats = build_index([tree], index, "default", model=model, dim=128, show_progress=False)
    finally:
        mining.read_source = real
    assert reads == [] and stats.unread_files == stats.files == 5 and stats.encoded == 0


def test_nothing_changed_leaves_the_index_untouched_and_a_touch_is_recorded(tree, index, model):
    """An unchanged tree rewrites nothing (a new generation of 300k functions cost 25 s); a file touched
    without a change is not re-encoded, but its new mtime is recorded so the next run does not read it again."""
    manifest = (index / "manifest.json").read_bytes()
    generation = json.loads(manifest)["generation"]
    stats = build_index([tree], index, "default", model=model, dim=128, show_progress=False)
    assert stats.unchanged and stats.encoded == 0 and stats.reused == stats.snippets > 0
    assert (index / "manifest.json").read_bytes() == manifest and (index / generation).is_dir()
    assert "nothing changed" in stats.summary()

    past = time.time() - 3600
    os.utime(tree / "pkg" / "config.py", (past, past))
    touched = build_index([tree], index, "default", model=model, dim=128, show_progress=False)
    assert not touched.unchanged and touched.encoded == 0
    assert json.loads((index / "manifest.json").read_bytes())["generation"] != generation
    assert load_index(index).files["pkg/config.py"][1] == (tree / "pkg" / "config.py").stat().st_mtime_ns
    assert build_index([tree], index, "default", model=model, dim=128, show_progress=False).unchanged


def test_an_index_in_the_old_format_is_rebuilt(tree, tmp_path, model):
    out = tmp_path / "old"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"model": "default", "dim": 128, "count": 0}))
    (out / "faiss.index").write_bytes(b"x")
    with pytest.raises(CodetuneError, match="older format; run `index` again"):
        load_index(out)
    build_index([tree], out, "default", model=model, dim=128, show_progress=False)
    assert load_index(out).snippets and not (out / "faiss.index").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["index", "{tree}", "--out", "{index}", "--precision", "int4"], "--precision int4: choose from float32"),
        (["index", "{tree}", "--out", "{index}", "--precision", "binary", "--dim", "100"], "--dim 100 must be a multiple of 8"),
        (["index", "{tree}", "--out", "{index}", "--precision", "int8", "--store", "chroma", "--chroma-path", "c"],
         "--store chroma: needs --precision float32 or float16"),
        (["index", "{tree}", "--out", "{index}", "--compute", "fp8"], "--compute fp8: choose from auto, bf16, fp32"),
        (["index", "{tree}", "--out", "{index}", "--max-tokens", "0"], "--max-tokens 0: must be at least 1"),
        (["query", "{index}", "x", "--mode", "fuzzy"], "--mode fuzzy: choose from dense, lexical, hybrid"),
        (["query", "{index}", "x", "--lang", "cobol"], "--lang cobol: choose from python"),
    ],
)
def test_bad_flags_are_one_line_and_leave_the_index(tree, index, argv, needle):
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    before = sorted(p.name for p in index.iterdir()), (index / "manifest.json").read_bytes()
    argv = [a.format(tree=tree, index=index) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "trainer.search", *argv], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [proc.stderr.strip()] and needle in proc.stderr, proc.stderr
    assert (sorted(p.name for p in index.iterdir()), (index / "manifest.json").read_bytes()) == before
