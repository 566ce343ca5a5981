"""Encoding through OpenVINO: the embeddings torch gives, exported once, never mixed with torch's.

The export tests need the ``openvino`` extra (Optimum Intel pins transformers below 5.6, so it lives
in a virtualenv of its own: see docs/search.md); without it only the refusal is tested.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainer.embedding_cache import model_fingerprint
from trainer.retrieval import encode

ROOT = Path(__file__).resolve().parents[1]
CODE_TREE = Path(__file__).parent / "fixtures" / "code_tree"
TEXTS = ["parse the port number", "def load(path):\n    with open(path) as f:\n        return json.load(f)",
         "save the user config", "def top(orders, n=3):\n    return sorted(orders, key=len)[-n:]"]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


OPENVINO = _installed("optimum.intel.openvino")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One export cache for the module: each backend exports once, the later tests reuse it."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("CODETUNE_CACHE")
    os.environ["CODETUNE_CACHE"] = str(folder)
    yield folder
    if old is None:
        del os.environ["CODETUNE_CACHE"]
    else:
        os.environ["CODETUNE_CACHE"] = old


@pytest.fixture(scope="module")
def torch_model():
    from trainer.models import load_model

    return load_model("default")


def test_calibration_texts_are_code_and_questions_from_the_stdlib_alike_every_time():
    from trainer.models.backends import calibration_texts

    texts = calibration_texts(40)
    assert texts == calibration_texts(40) and len(texts) == 40
    assert all(t.lstrip().startswith(("def ", "async def ", "@")) for t in texts[:20])  # functions as written
    assert not any(t.lstrip().startswith(("def ", "@")) or "\n" in t for t in texts[20:])  # one-line docstring summaries


@pytest.mark.skipif(OPENVINO, reason="the openvino extra is installed: the export tests below run instead")
def test_a_missing_backend_is_one_line_naming_the_extra_and_writes_nothing(tmp_path):
    out = tmp_path / "index"
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "CODETUNE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "trainer.search", "index", str(CODE_TREE / "pkg"), "--out", str(out),
                           "--compute", "openvino-int8"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
    assert "--compute openvino-int8: needs Optimum's openvino backend" in proc.stderr and "codetune[openvino]" in proc.stderr
    assert not out.exists() and not (tmp_path / "cache" / "encoders").exists()


@pytest.mark.skipif(not OPENVINO, reason="needs the openvino extra")
@pytest.mark.parametrize("compute, int8", [("openvino", False), ("openvino-int8", True)])
def test_an_exported_encoder_matches_torch_and_is_exported_once(cache, torch_model, compute, int8, monkeypatch):
    from trainer.models import backends

    model = backends.load_encoder("default", compute)
    expected = F.normalize(encode(torch_model, TEXTS, "document"), dim=-1)  # (4, 384)
    got = F.normalize(encode(model, TEXTS, "document", compute=compute).float().cpu(), dim=-1)
    cosine = (expected * got).sum(-1)
    # fp32 graphs agree to rounding; int8 moves each embedding a little, not its neighbours
    assert cosine.min() > (0.97 if int8 else 0.9999), cosine
    assert torch.equal((got @ got.T).argsort(dim=-1), (expected @ expected.T).argsort(dim=-1))

    # One export per model and compute: a second load reads it and makes none.
    monkeypatch.setattr(backends, "_export", lambda *a: pytest.fail("exported twice"))
    again = backends.load_encoder("default", compute)
    assert torch.allclose(encode(again, TEXTS, "document", compute=compute).float().cpu(),
                          encode(model, TEXTS, "document", compute=compute).float().cpu())
    # Its fingerprint is neither torch's nor another backend's: no index or score cache mixes them.
    assert model_fingerprint(model) == model_fingerprint(again) != model_fingerprint(torch_model)


@pytest.mark.skipif(not OPENVINO, reason="needs the openvino extra")
def test_an_index_built_with_int8_is_queried_with_the_same_int8_encoder(cache, tmp_path):
    from trainer.search import build_index, load_index, main

    tree = tmp_path / "src"
    shutil.copytree(CODE_TREE / "pkg", tree / "pkg")
    out = tmp_path / "index"
    build_index([tree], out, "default", dim=128, compute="openvino-int8", show_progress=False)
    assert load_index(out).manifest["compute"] == "openvino-int8"
    assert main(["query", str(out), "parse the port number", "-k", "1", "--json"]) == 0


def _mixed_texts(n: int) -> list[str]:
    """``n`` functions and one-line questions, shuffled: lengths from a few tokens to past 128."""
    import random

    from trainer.models.backends import calibration_texts

    texts = calibration_texts(n)
    random.Random(0).shuffle(texts)
    return texts


@pytest.mark.skipif(not OPENVINO, reason="needs the openvino extra")
@pytest.mark.parametrize("compute, max_seq_length", [("openvino", None), ("openvino-int8", 128)])
def test_batches_encoded_at_once_are_the_models_own_encode_in_the_texts_order(cache, compute, max_seq_length,
                                                                              monkeypatch):
    from trainer.models import backends

    model = backends.load_encoder("default", compute, max_seq_length=max_seq_length)
    texts = _mixed_texts(45)  # 6 batches of 8, the last of 5
    ran = []
    run_async = backends._run_async
    monkeypatch.setattr(backends, "_run_async", lambda *a: ran.append(a[2]) or run_async(*a))
    for kind, own in (("document", model.encode_document), ("query", model.encode_query)):
        got = encode(model, texts, kind, batch_size=8, compute=compute)  # (45, 384)
        expected = own(texts, batch_size=8, convert_to_tensor=True)
        assert got.shape == expected.shape == (45, 384)
        assert F.cosine_similarity(got, expected).min() > 0.9999
        assert torch.allclose(got, expected, atol=1e-4)
    assert [len(b) for b in ran[0]] == [8] * 5 + [5] and len(ran) == 2  # both kinds ran async, nothing fell back


def test_a_model_without_an_openvino_graph_is_encoded_batch_by_batch_as_before(torch_model):
    from trainer.models.backends import encode_async

    texts = _mixed_texts(10)
    assert encode_async(torch_model, [texts[:5], texts[5:]], "document") is None
    assert torch.allclose(encode(torch_model, texts, "document", batch_size=4, compute="openvino"),
                          encode(torch_model, texts, "document", batch_size=4), atol=1e-6)
