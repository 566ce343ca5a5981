"""Contrastive losses over embeddings (the model's forward pass happens in the loop)."""

from trainer.losses.info_nce import info_nce
from trainer.losses.matryoshka import LossConfig, MatryoshkaInfoNCE

__all__ = ["info_nce", "LossConfig", "MatryoshkaInfoNCE"]
