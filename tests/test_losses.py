"""InfoNCE and its Matryoshka form against hand computation and sentence-transformers' losses."""

import math

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

from trainer.losses import MatryoshkaInfoNCE, info_nce
from trainer.models import load_model
from trainer.models.forward import embed, tokenize


def test_info_nce_by_hand():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    c = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=-1)
    t = 0.5
    s = q @ c.T / t
    expected = (-(s[0, 0] - torch.logsumexp(s[0], 0)) - (s[1, 1] - torch.logsumexp(s[1], 0))) / 2
    assert info_nce(q, c, torch.tensor([0, 1]), t).item() == pytest.approx(expected.item())


def test_perfect_separation_drives_loss_to_zero():
    q = torch.eye(4)
    assert info_nce(q, q, torch.arange(4), temperature=0.01).item() < 1e-6
    assert info_nce(q, torch.ones(4, 4) / 2, torch.arange(4), 1.0).item() == pytest.approx(math.log(4))


def test_hard_negatives_join_the_pool():
    g = torch.Generator().manual_seed(0)
    q, p, n = (torch.randn(3, 8, generator=g) for _ in range(3))
    loss_fn = MatryoshkaInfoNCE(dims=[8], temperature=0.1)
    with_neg, _ = loss_fn(q, p, n)
    without, _ = loss_fn(q, p)
    ref = info_nce(F.normalize(q), F.normalize(torch.cat([p, n])), torch.arange(3), 0.1)
    assert with_neg.item() == pytest.approx(ref.item(), rel=1e-6)
    assert with_neg.item() > without.item()  # more negatives, harder task


def test_matryoshka_equals_sentence_transformers(tiny_bert):
    """Same model, same batch: our loss on embeddings == MatryoshkaLoss(MultipleNegativesRankingLoss)."""
    model = load_model(str(tiny_bert), preset="bge")
    queries = ["parse the config file", "open a socket", "sort a list in place"]
    docs = ["def parse(path): return load(path)", "def connect(): return socket()", "def sort(xs): xs.sort()"]
    qf = tokenize(model, queries, "query", model.device)
    df = tokenize(model, docs, "document", model.device)
    dims, t = [32, 16, 8], 0.05

    ours, _ = MatryoshkaInfoNCE(dims=dims, temperature=t, gather=False)(
        embed(model, qf, "query"), embed(model, df, "document")
    )
    reference = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=1 / t), matryoshka_dims=dims)
    theirs = reference([qf, df], None)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_symmetric_equals_sentence_transformers(tiny_bert):
    """Query -> document and document -> query, averaged: == MultipleNegativesSymmetricRankingLoss."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesSymmetricRankingLoss

    model = load_model(str(tiny_bert), preset="bge")
    queries = ["parse the config file", "open a socket", "sort a list in place", "read a file"]
    docs = ["def parse(path): return load(path)", "def connect(): return socket()", "def sort(xs): xs.sort()", "def read(p): pass"]
    qf = tokenize(model, queries, "query", model.device)
    df = tokenize(model, docs, "document", model.device)
    dims, t = [32, 8], 0.05
    q, d = embed(model, qf, "query"), embed(model, df, "document")
    ours, _ = MatryoshkaInfoNCE(dims=dims, temperature=t, gather=False, symmetric=True)(q, d)
    one_way, _ = MatryoshkaInfoNCE(dims=dims, temperature=t, gather=False)(q, d)
    reference = MatryoshkaLoss(model, MultipleNegativesSymmetricRankingLoss(model, scale=1 / t), matryoshka_dims=dims)
    assert ours.item() == pytest.approx(reference([qf, df], None).item(), rel=1e-5)
    assert ours.item() != pytest.approx(one_way.item(), rel=1e-3)


def test_training_forward_matches_encode(tiny_bert):
    """The loop's differentiable forward embeds exactly as encode_query / encode_document."""
    model = load_model(str(tiny_bert), preset="bge").eval()
    texts = ["read a file", "def read(p): return open(p).read()"]
    for kind, encode in (("query", model.encode_query), ("document", model.encode_document)):
        with torch.no_grad():
            ours = embed(model, tokenize(model, texts, kind, model.device), kind)
        torch.testing.assert_close(ours, encode(texts, convert_to_tensor=True), atol=1e-5, rtol=1e-5)


def test_fill_negatives_tops_up_without_the_positive():
    from trainer.data.batches import fill_negatives
    from trainer.errors import CodetuneError

    rows = [{"query": f"q{i}", "positive": f"p{i}", "negatives": ["n"] * (i % 3)} for i in range(10)]
    out, filled = fill_negatives(rows, 2, seed=0)
    assert all(len(r["negatives"]) == 2 for r in out)
    assert all(r["positive"] not in r["negatives"] for r in out)
    assert filled == sum(max(0, 2 - i % 3) for i in range(10))
    assert out[2]["negatives"] == ["n", "n"]  # rows that had enough keep their own
    with pytest.raises(CodetuneError, match="distinct documents"):
        fill_negatives(rows[:2], 2, seed=0)


def test_weights_and_temperature_are_checked_naming_the_key():
    from trainer.errors import CodetuneError

    with pytest.raises(CodetuneError, match=r"loss.matryoshka_weights: 2 weights for 3 dims \[32, 16, 8\]"):
        MatryoshkaInfoNCE(dims=[32, 16, 8], weights=[1.0, 2.0])
    with pytest.raises(CodetuneError, match="loss.temperature: 0.0 must be above 0"):
        MatryoshkaInfoNCE(dims=[8], temperature=0.0)
