"""Weight-space ensembling: the merged weights are the interpolation, and the recipe applies it."""

import pytest
import torch

from trainer.errors import CodetuneError
from trainer.models.merge import interpolate, snapshot


def test_interpolate_between_base_and_tuned():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    base = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    tuned = snapshot(model)
    interpolate(model, base, 0.25)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), base[name] + 0.25 * (tuned[name] - base[name]))
    interpolate(model, base, 0.0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), base[name])
    with pytest.raises(CodetuneError, match="merge.alpha: 1.5 is not between 0 and 1"):
        interpolate(model, base, 1.5)


def test_frozen_weights_are_not_copied():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    assert set(snapshot(model)) == {"1.weight", "1.bias"}
