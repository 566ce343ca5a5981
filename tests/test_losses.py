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


def test_a_teachers_softmax_becomes_its_share_of_the_target_where_it_ranks_the_positive_first():
    g = torch.Generator().manual_seed(0)
    q, c = (F.normalize(torch.randn(4, 8, generator=g), dim=-1) for _ in range(2))
    teacher = torch.randn(4, 4, generator=g).clamp(-1, 1)  # the teacher's cosines of the same pairs
    teacher[:3] += 2 * torch.eye(4)[:3]  # right on the first three queries...
    teacher[3, 0] = 3.0  # ...and wrong on the last
    t, tt, w = 0.1, 0.05, 0.3
    log_p = F.log_softmax(q @ c.T / t, dim=-1)
    p_teacher = F.softmax(teacher / tt, dim=-1)
    hard = -log_p.diagonal()  # (4,)
    soft = -(p_teacher * log_p).sum(-1)
    expected = torch.cat([(1 - w) * hard[:3] + w * soft[:3], hard[3:]]).mean()
    ours = info_nce(q, c, torch.arange(4), t, teacher, teacher_weight=w, teacher_temperature=tt)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    assert info_nce(q, c, torch.arange(4), t, teacher, teacher_weight=0.0).item() == pytest.approx(hard.mean().item(), rel=1e-6)
    every = info_nce(q, c, torch.arange(4), t, teacher, w, tt, teacher_only_right=False)  # the wrong query too
    assert every.item() == pytest.approx(((1 - w) * hard + w * soft).mean().item(), rel=1e-6)


def test_a_student_that_scores_as_its_teacher_gets_no_gradient_from_it():
    """At weight 1 the target is the teacher's softmax alone: the student already matching it is a minimum."""
    g = torch.Generator().manual_seed(1)
    c = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    q = F.normalize(c + 0.3 * torch.randn(5, 8, generator=g), dim=-1).requires_grad_()  # each nearest its own
    teacher = (q @ c.T).detach() * 0.5  # the same softmax at half the temperature
    assert (teacher.argmax(-1) == torch.arange(5)).all()
    info_nce(q, c, torch.arange(5), 0.1, teacher, teacher_weight=1.0, teacher_temperature=0.05).backward()
    assert q.grad.abs().max().item() < 1e-6
    q.grad = None
    info_nce(q, c, torch.arange(5), 0.1, teacher * 2, teacher_weight=1.0, teacher_temperature=0.05).backward()
    assert q.grad.abs().max().item() > 1e-2  # a sharper teacher does pull


def test_matryoshka_scores_every_dim_against_the_teachers_full_embedding():
    g = torch.Generator().manual_seed(2)
    q, p, n = (torch.randn(3, 8, generator=g) for _ in range(3))
    tq = F.normalize(torch.randn(3, 16, generator=g), dim=-1)  # another width: the teacher's own
    td = F.normalize(torch.cat([tq + 0.5 * torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)]), dim=-1)
    loss_fn = MatryoshkaInfoNCE(dims=[8, 4], temperature=0.1, gather=False, symmetric=True, teacher_weight=0.4)
    ours, _ = loss_fn(q, p, n, (tq, td))
    expected = 0.0
    for dim in (8, 4):
        qd, pd, nd = (F.normalize(x[:, :dim], dim=-1) for x in (q, p, n))
        forward = info_nce(qd, torch.cat([pd, nd]), torch.arange(3), 0.1, tq @ td.T, 0.4, 0.05)
        back = info_nce(pd, qd, torch.arange(3), 0.1, td[:3] @ tq.T, 0.4, 0.05)
        expected += 0.5 * (forward + back)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    plain, _ = MatryoshkaInfoNCE(dims=[8, 4], temperature=0.1, gather=False, symmetric=True)(q, p, n, (tq, td))
    without, _ = loss_fn(q, p, n)
    assert plain.item() == pytest.approx(without.item(), rel=1e-6)  # weight 0, or no teacher: plain InfoNCE
    assert ours.item() != pytest.approx(plain.item(), rel=1e-3)


def test_teacher_settings_are_checked_naming_the_key():
    from trainer.errors import CodetuneError

    with pytest.raises(CodetuneError, match=r"loss.teacher_weight: 1.5 must be in \[0, 1\]"):
        MatryoshkaInfoNCE(dims=[8], teacher_weight=1.5)
    with pytest.raises(CodetuneError, match="loss.teacher_temperature: 0 must be above 0"):
        MatryoshkaInfoNCE(dims=[8], teacher_temperature=0)
