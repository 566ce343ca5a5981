"""Ranking metrics on cases small enough to compute by hand, and the chunked top-k."""

import math

import pytest
import torch

from trainer.metrics import average_precision_at_k, mrr_at_k, ndcg_at_k, recall_at_k, retrieval_metrics
from trainer.retrieval import normalize_truncate, top_k


def test_hand_computed_single_query():
    ranked = ["a", "x", "b", "y", "z"]
    relevant = {"a", "b", "c"}
    assert mrr_at_k(ranked, relevant, 10) == 1.0
    assert mrr_at_k(["x", "y", "a"], relevant, 2) == 0.0
    assert recall_at_k(ranked, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevant, 5) == pytest.approx(2 / 3)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(dcg / idcg)
    # hits at ranks 1 and 3: precisions 1/1 and 2/3, over min(k, |relevant|) = 3
    assert average_precision_at_k(ranked, relevant, 100) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k(ranked, relevant, 2) == pytest.approx(1 / 2)


def test_mean_over_queries():
    rankings = {"q1": ["d1", "d2"], "q2": ["d1", "d2"]}
    relevant = {"q1": {"d1"}, "q2": {"d2"}}
    m = retrieval_metrics(rankings, relevant)
    assert m["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


@pytest.mark.parametrize("q_chunk,d_chunk", [(1, 1), (3, 7), (1000, 100000)])
def test_chunked_top_k_equals_full_sort(q_chunk, d_chunk):
    g = torch.Generator().manual_seed(0)
    q = normalize_truncate(torch.randn(11, 16, generator=g))
    d = normalize_truncate(torch.randn(53, 16, generator=g))
    scores, idx = top_k(q, d, k=10, query_chunk=q_chunk, doc_chunk=d_chunk)
    ref_scores, ref_idx = (q @ d.T).sort(dim=1, descending=True)
    torch.testing.assert_close(scores, ref_scores[:, :10])
    assert torch.equal(idx, ref_idx[:, :10])


def test_top_k_clips_to_corpus_size():
    scores, idx = top_k(torch.eye(2), torch.eye(2), k=100)
    assert idx.shape == (2, 2)


def test_normalize_truncate_keeps_prefix():
    emb = torch.tensor([[3.0, 4.0, 12.0]])
    torch.testing.assert_close(normalize_truncate(emb, 2), torch.tensor([[0.6, 0.8]]))
