"""The comparison table and plot over run folders."""

import json
import subprocess
import sys

import pytest

from trainer.compare import load_runs
from trainer.errors import CodetuneError


def fake_run(folder, before, after, data="evalset", fingerprint=None):
    folder.mkdir(parents=True)
    metrics = lambda v: {d: {"ndcg@10": v - i / 100, "recall@10": v} for i, d in enumerate(["384", "128"])}  # noqa: E731
    meta = {"model": "m", "data": data, "split": "test", **({"data_fingerprint": fingerprint} if fingerprint else {})}
    result = {side: {**meta, "metrics": metrics(v)} for side, v in (("before", before), ("after", after))}
    (folder / "eval.json").write_text(json.dumps(result))
    return folder


def test_table_and_png(tmp_path):
    a = fake_run(tmp_path / "full", 0.5, 0.7)
    b = fake_run(tmp_path / "head", 0.5, 0.6)
    png = tmp_path / "cmp.png"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.compare", str(a), str(b), "--plot", str(png)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "base" in proc.stdout and "full" in proc.stdout and "70.00" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(png).size[0] > 300


def test_runs_on_different_sets_are_refused(tmp_path):
    a = fake_run(tmp_path / "a", 0.5, 0.7)
    b = fake_run(tmp_path / "b", 0.5, 0.6, data="other")
    with pytest.raises(CodetuneError, match="runs must share one set"):
        load_runs([str(a), str(b)], None)
    assert list(load_runs([str(a)], ["full"])) == ["base", "full"]


def test_the_same_set_is_decided_by_its_content_not_its_path(tmp_path, beir_code, monkeypatch):
    import shutil

    from trainer.data.beir import load_beir

    original = load_beir(beir_code).fingerprint()
    copy = tmp_path / "copy"
    shutil.copytree(beir_code, copy)
    assert load_beir(copy).fingerprint() == original  # another place, the same set
    queries = copy / "queries.jsonl"
    queries.write_text(queries.read_text().replace("a", "b", 1))  # re-mined at the same path
    remined = load_beir(copy).fingerprint()
    assert remined != original

    a = fake_run(tmp_path / "a", 0.5, 0.7, data=str(copy), fingerprint=original)
    b = fake_run(tmp_path / "b", 0.5, 0.6, data=str(copy), fingerprint=remined)
    with pytest.raises(CodetuneError, match="runs must share one set"):
        load_runs([str(a), str(b)], None)
    c = fake_run(tmp_path / "c", 0.5, 0.6, data="elsewhere/relative", fingerprint=original)
    assert list(load_runs([str(a), str(c)], None)) == ["base", "a", "c"]
    # Older runs without a fingerprint: one folder spelt relative and absolute is one set.
    monkeypatch.chdir(tmp_path)
    d = fake_run(tmp_path / "d", 0.5, 0.6, data="copy")
    e = fake_run(tmp_path / "e", 0.5, 0.6, data=str(copy))
    assert list(load_runs([str(d), str(e)], None)) == ["base", "d", "e"]
