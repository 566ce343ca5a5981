"""Code search: index a tree, query it, update it incrementally, agree with the shared top-k, export to Chroma."""

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
from trainer.search import build_index, export_chroma, load_index, main, search

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
    hits = search(idx, QUERIES, model, k=4)
    docs = normalize_truncate(encode(model, [s.code for s in idx.snippets], "document"), 128)
    queries = normalize_truncate(encode(model, QUERIES, "query"), 128)
    scores, ids = top_k(queries, docs, k=4)
    for row, srow, irow in zip(hits, scores, ids):
        torch.testing.assert_close(torch.tensor([h.score for h in row]), srow, atol=1e-5, rtol=0)
        assert [h.snippet.id for h in row] == [idx.snippets[i].id for i in irow.tolist()]


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
