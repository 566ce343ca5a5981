"""The comparison table and plot over run folders."""

import json
import subprocess
import sys

import pytest

from trainer.compare import load_runs
from trainer.errors import CodetuneError


def fake_run(folder, before, after, data="evalset"):
    folder.mkdir(parents=True)
    metrics = lambda v: {d: {"ndcg@10": v - i / 100, "recall@10": v} for i, d in enumerate(["384", "128"])}  # noqa: E731
    result = {side: {"model": "m", "data": data, "split": "test", "metrics": metrics(v)} for side, v in (("before", before), ("after", after))}
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
