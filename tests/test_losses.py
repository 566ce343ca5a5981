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


def test_false_negative_margin_masks_only_candidates_that_beat_the_positive_by_the_margin():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # query 0: positive at cosine 0.6, candidate 2 at 1.0 (beats it by 0.4), candidate 1 at 0.
    c = F.normalize(torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]]), dim=-1)
    t = 0.5
    s = q @ c.T / t
    masked0 = -(s[0, 0] - torch.logsumexp(s[0, :2], 0))  # candidate 2 left out of query 0's softmax
    full1 = -(s[1, 1] - torch.logsumexp(s[1], 0))  # nothing beats query 1's positive
    loss = info_nce(q, c, torch.tensor([0, 1]), t, false_negative_margin=0.3)
    assert loss.item() == pytest.approx(((masked0 + full1) / 2).item())
    # a margin wider than the gap masks nothing: plain InfoNCE
    assert info_nce(q, c, torch.tensor([0, 1]), t, 0.5).item() == pytest.approx(info_nce(q, c, torch.tensor([0, 1]), t).item())


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
    with pytest.raises(CodetuneError, match="loss.false_negative_margin: -0.1 must be 0 or more"):
        MatryoshkaInfoNCE(dims=[8], false_negative_margin=-0.1)


@pytest.mark.parametrize("symmetric,hard", [(True, 0), (False, 0), (True, 2)])
def test_same_type_negatives_equal_sentence_transformers_joint_directions(symmetric, hard):
    """GTE's joint softmax == MultipleNegativesRankingLoss(directions=..., partition_mode="joint") at each dim."""
    g = torch.Generator().manual_seed(0)
    b, dims, t = 5, [16, 8], 0.05
    q, p = torch.randn(b, 16, generator=g), torch.randn(b, 16, generator=g)
    neg = torch.randn(b * hard, 16, generator=g) if hard else None  # ours: grouped by query
    ours, per_dim = MatryoshkaInfoNCE(dims=dims, temperature=t, gather=False, symmetric=symmetric,
                                      same_type_negatives=True)(q, p, neg)
    directions = ("query_to_doc", "query_to_query") + (("doc_to_query",) if symmetric else ()) + ("doc_to_doc",)
    reference = MultipleNegativesRankingLoss(None, scale=1 / t, directions=directions, partition_mode="joint")
    columns = [] if neg is None else [neg.view(b, hard, -1)[:, k] for k in range(hard)]  # theirs: one column per k
    for dim in dims:
        theirs = reference.compute_loss_from_embeddings([x[:, :dim] for x in [q, p, *columns]], None)
        assert per_dim[dim].item() == pytest.approx(theirs.item(), rel=1e-5)
    plain, _ = MatryoshkaInfoNCE(dims=dims, temperature=t, gather=False, symmetric=symmetric)(q, p, neg)
    assert ours.item() > plain.item()  # more rivals in every softmax


def test_same_type_negatives_mask_suspects_of_every_kind():
    """With a margin, a rival query or document that beats the positive leaves that pair's softmax, as a document would."""
    q = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0]])  # q0.q1 = 0.8
    p = torch.tensor([[0.6, 0.0, 0.8], [0.0, 0.6, 0.8]])  # d0.d1 = 0.64; q0.d0 = 0.6, q0.d1 = 0; q1.d1 = 0.36, q1.d0 = 0.48
    t = 0.5
    with_margin, _ = MatryoshkaInfoNCE(dims=[3], temperature=t, gather=False, same_type_negatives=True,
                                       false_negative_margin=0.1)(q, p)
    # pair 0 (positive 0.6): q1 (0.8) is out, d1 (0.64, within the margin) and q0.d1 stay
    l0 = torch.logsumexp(torch.tensor([0.6, 0.0, 0.64]) / t, 0) - 0.6 / t
    # pair 1 (positive 0.36): d0 as a document (0.48), q0 (0.8) and d0 as a rival of d1 (0.64) are all out
    l1 = 0.0
    assert with_margin.item() == pytest.approx(((l0 + l1) / 2).item(), rel=1e-5)
    without, _ = MatryoshkaInfoNCE(dims=[3], temperature=t, gather=False, same_type_negatives=True)(q, p)
    assert without.item() > with_margin.item()
