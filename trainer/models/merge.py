"""Weight-space ensembling of the tuned model with its base (WiSE-FT).

Fine-tuning on one codebase moves the weights towards its kind of query and code, and away from
what the base model learnt from a billion general pairs. Interpolating the weights,
``theta = theta_base + alpha * (theta_tuned - theta_base)``, keeps most of the target gain and
brings general retrieval back (Wortsman et al., "Robust fine-tuning of zero-shot models",
CVPR 2022; LM-Cocktail does the same for BGE). It costs nothing at inference: one model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.errors import CodetuneError


@dataclass
class MergeConfig:
    # Weight of the tuned model when it is averaged with its base (WiSE-FT): final = base +
    # alpha * (tuned - base). 1: the tuned model as trained. Lower keeps more general search.
    alpha: float = 1.0


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the trainable weights, taken before training."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def interpolate(model: torch.nn.Module, base: dict[str, torch.Tensor], alpha: float) -> None:
    """Move ``model``'s weights in place to ``base + alpha * (model - base)``.

    Args:
        base: from :func:`snapshot` of the same model before training.
        alpha: 1 keeps the tuned weights, 0 gives the base back.
    """
    if not 0.0 <= alpha <= 1.0:
        raise CodetuneError(f"merge.alpha: {alpha} is not between 0 and 1")
    params = dict(model.named_parameters())
    missing = [name for name in base if name not in params]
    if missing:
        raise CodetuneError(f"merge.alpha: the model no longer has weight {missing[0]!r} of its base")
    for name, start in base.items():
        p = params[name]
        p.copy_(start.to(p.device, p.dtype) + alpha * (p - start.to(p.device, p.dtype)))
