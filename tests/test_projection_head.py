"""The query-only head: identity at start, trains on cached embeddings, exports through a Router."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from trainer.models import load_model
from trainer.models.projection import QueryHead, with_query_head

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "beir_code"


@pytest.mark.parametrize("rank", [0, 4])
def test_head_starts_as_identity_and_exports_exactly(tiny_bert, rank):
    base = load_model(str(tiny_bert), preset="bge")
    head = QueryHead(32, rank)
    x = torch.randn(5, 32)
    torch.testing.assert_close(head(x), x)
    with torch.no_grad():
        head.bias.add_(0.5)
    model = with_query_head(base, head)
    texts = ["open a file for reading"]
    q_base = base.encode_query(texts, convert_to_tensor=True)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(head(q_base), dim=-1)
    torch.testing.assert_close(model.encode_query(texts, convert_to_tensor=True), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode_document(texts, convert_to_tensor=True), base.encode_document(texts, convert_to_tensor=True))


@pytest.mark.slow
def test_recipe_improves_and_exports_router_model(tiny_roberta, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    sys.path.insert(0, str(Path(__file__).parent))
    from train_worker import fixture_rows

    pairs.write_text("".join(json.dumps(r) + "\n" for r in fixture_rows()))
    out = tmp_path / "run"
    env = {**os.environ, "CODETUNE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable, str(ROOT / "recipes" / "projection_head.py"), f"model.name={tiny_roberta}",
        "model.preset=codebert", f"data.source={pairs}", f"data.eval={FIXTURE}", "loss.matryoshka_dims=[32,16]",
        f"output_dir={out}", "head.epochs=30", "head.batch_size=64", "tracking.wandb=disabled",
        f"eval.questions=[{FIXTURE}]",  # a BEIR folder stands in for a set of people's questions
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "encoded and cached" in proc.stdout
    result = json.loads((out / "eval.json").read_text())
    assert result["after"]["metrics"]["32"]["ndcg@10"] > result["before"]["metrics"]["32"]["ndcg@10"]
    # eval.questions is scored before and after, as the fine-tuning recipes score it; here the
    # same set as the held-out split, so the same numbers.
    scores = result["questions"][str(FIXTURE)]
    assert scores["before"] == result["before"]["metrics"] and scores["after"] == result["after"]["metrics"]
    model = SentenceTransformer(str(out / "final"))
    q = model.encode_query(["parse the configuration"], convert_to_tensor=True)
    d = model.encode_document(["parse the configuration"], convert_to_tensor=True)
    assert not torch.allclose(q, d)  # same text, different routes
    # A second run reuses the cached embeddings.
    again = [a for a in cmd if not a.startswith("output_dir=")] + [f"output_dir={tmp_path / 'again'}"]
    proc = subprocess.run(again, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "from cache" in proc.stdout


def test_training_forward_routes_queries_through_the_head(tiny_bert):
    """The loop's forward on a Router model equals encode_query / encode_document."""
    from trainer.models.forward import embed, tokenize

    base = load_model(str(tiny_bert), preset="bge")
    head = QueryHead(32, 0)
    with torch.no_grad():
        head.weight.mul_(2).add_(0.1)
    model = with_query_head(base, head).eval()
    texts = ["read a file", "def read(p): return open(p).read()"]
    for kind, encode in (("query", model.encode_query), ("document", model.encode_document)):
        with torch.no_grad():
            ours = embed(model, tokenize(model, texts, kind, model.device), kind)
        torch.testing.assert_close(ours, encode(texts, convert_to_tensor=True), atol=1e-5, rtol=1e-5)


def test_a_head_batch_the_rows_cannot_fill_is_an_error_not_a_run_that_trains_nothing():
    from trainer.errors import CodetuneError
    from trainer.losses import MatryoshkaInfoNCE
    from trainer.models.projection import fit_query_head
    from trainer.sampler import text_keys

    rows = [{"query": "the same question", "positive": f"def f{i}(): pass"} for i in range(6)]
    emb = torch.randn(6, 8)
    loss_fn = MatryoshkaInfoNCE([8], None, 0.05, gather=False)
    with pytest.raises(CodetuneError, match="head.batch_size: 64"):
        fit_query_head(QueryHead(8, 4), emb, emb, text_keys(rows, 0), loss_fn, 1, 64, 1e-3, 0.0, 0)
