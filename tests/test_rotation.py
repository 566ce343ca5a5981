"""The principal-axes rotation: orthogonal, ordered by variance, invisible at the full dimension."""

import pytest
import torch
from accelerate import Accelerator
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize
from test_recipes import check_run_folder, pairs, run_recipe  # noqa: F401 -- the fixture is used by name
from train_worker import fixture_rows

from trainer.models import load_model
from trainer.models.rotation import add_rotation, fit_rotation, principal_axes, refit, rotation_layer
from trainer.retrieval import encode


def test_principal_axes_are_orthogonal_and_put_the_widest_direction_first():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.1, 3.0, 0.5, 1.0, 2.0, 0.2])  # coordinate 1 varies most, then 4, then 3
    x = torch.randn(4000, 6, generator=gen) * scales + 5.0  # an offset that centring must remove
    r = principal_axes(x)
    torch.testing.assert_close(r @ r.T, torch.eye(6), atol=1e-5, rtol=0)
    assert [int(row.abs().argmax()) for row in r[:3]] == [1, 4, 3]
    spread = (x @ r.T).var(0)
    assert torch.all(spread[:-1] >= spread[1:])  # falling variance


def test_a_fitted_rotation_keeps_full_dim_similarity_and_puts_more_variance_in_prefixes(tiny_bert, tmp_path):
    model = load_model(str(tiny_bert), "bge")
    rows = fixture_rows()
    texts = [r["positive"] for r in rows[:40]]
    before = encode(model, texts, "document")  # (40, 32)
    r = fit_rotation(model, rows, sample=64)
    layer = add_rotation(model, r)
    after = encode(model, texts, "document")
    torch.testing.assert_close(after @ after.T, before @ before.T, atol=1e-5, rtol=0)
    # The leading 8 coordinates now hold more of the variance than the model's own first 8 did.
    assert after[:, :8].var(0).sum() > 1.5 * before[:, :8].var(0).sum()
    assert not any(p.requires_grad for p in layer.parameters())
    assert isinstance(model[-1], Normalize) and model[-2] is layer  # still ends as it did (the head recipe needs it)
    model.save(str(tmp_path / "saved"))  # a plain sentence-transformers folder that applies it by itself
    torch.testing.assert_close(encode(SentenceTransformer(str(tmp_path / "saved")), texts, "document"), after)


@pytest.mark.parametrize("rotated", [True, False])
def test_a_refit_folds_a_second_rotation_in_and_sorts_the_trained_model_by_variance(tiny_bert, rotated):
    model = load_model(str(tiny_bert), "bge")
    rows = fixture_rows()
    texts = [r["positive"] for r in rows[:40]]
    if rotated:
        first = add_rotation(model, principal_axes(torch.randn(100, 32, generator=torch.Generator().manual_seed(0))))
    before = encode(model, texts, "document")  # (40, 32)
    modules = len(model)
    layer = refit(model, rows, Accelerator(cpu=True), sample=64)
    assert rotation_layer(model) is layer and len(model) == modules + (0 if rotated else 1)  # folded in, or added once
    if rotated:
        assert layer is first
    w = layer.linear.weight
    torch.testing.assert_close(w @ w.T, torch.eye(32), atol=1e-5, rtol=0)
    after = encode(model, texts, "document")
    torch.testing.assert_close(after @ after.T, before @ before.T, atol=1e-5, rtol=0)
    assert after[:, :8].var(0).sum() > 1.5 * before[:, :8].var(0).sum()
    assert not w.requires_grad


@pytest.mark.slow
def test_recipe_with_rotation_resumes_exactly_and_merges_around_it(tiny_bert, pairs, tmp_path):  # noqa: F811
    # Rotated before training and re-sorted after it: still orthogonal, still exact on resume.
    refitted = ["tracking.wandb=disabled", "model.pca_rotation=true", "model.pca_refit=true"]
    run_recipe("matryoshka.py", tiny_bert, "bge", tmp_path / "straight", pairs, *refitted)
    straight = SentenceTransformer(str(tmp_path / "straight" / "final"))
    rot = straight[-2].linear.weight.detach()
    torch.testing.assert_close(rot @ rot.T, torch.eye(32), atol=1e-5, rtol=0)  # frozen through training and merge
    ckpt = tmp_path / "straight" / "checkpoints" / "step-3"
    run_recipe("matryoshka.py", tiny_bert, "bge", tmp_path / "resumed", pairs, *refitted, f"resume_from_checkpoint={ckpt}")
    resumed = SentenceTransformer(str(tmp_path / "resumed" / "final"))
    texts = [r["positive"] for r in fixture_rows()[:8]]
    torch.testing.assert_close(resumed.encode(texts, convert_to_tensor=True), straight.encode(texts, convert_to_tensor=True),
                               atol=1e-5, rtol=0)
    # At merge.alpha 0 the result is the base model, rotated twice: every full-dim score is the base's. (Not
    # compared through ranking metrics: the tiny random model has near-ties that float rounding reorders.)
    run_recipe("matryoshka.py", tiny_bert, "bge", tmp_path / "base", pairs, *refitted, "merge.alpha=0.0")
    check_run_folder(tmp_path / "base")
    base, merged = load_model(str(tiny_bert), "bge"), SentenceTransformer(str(tmp_path / "base" / "final"))
    queries, docs = [r["query"] for r in fixture_rows()[:16]], [r["positive"] for r in fixture_rows()[:16]]

    def scores(model):  # (16, 16) cosine similarity of queries to documents
        q, d = (torch.nn.functional.normalize(encode(model, x, kind), dim=-1) for x, kind in ((queries, "query"), (docs, "document")))
        return q @ d.T

    torch.testing.assert_close(scores(merged), scores(base), atol=1e-5, rtol=0)
    w = merged[-2].linear.weight
    torch.testing.assert_close(w @ w.T, torch.eye(32), atol=1e-5, rtol=0)  # kept by the merge, refitted after it
