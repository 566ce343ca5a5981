"""InfoNCE under a Matryoshka objective, with negatives gathered from every process.

References:
    Kusupati et al., "Matryoshka Representation Learning" (NeurIPS 2022).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from trainer.distributed import gather_with_grad, rank
from trainer.errors import CodetuneError
from trainer.losses.info_nce import info_nce


@dataclass
class LossConfig:
    temperature: float = 0.05  # lower: sharper softmax, harder negatives weigh more
    matryoshka_dims: list[int] = field(default_factory=list)  # empty: full dim and 512/256/128/64 below it
    matryoshka_weights: list[float] | None = None  # one per dim; None: all 1
    gather_across_devices: bool = True  # every process's documents are negatives for every query
    symmetric: bool = False  # also score each document against every query (document -> query InfoNCE)
    # Score distillation: a model name as model.name takes it (mpnet-base, a folder, a hub name)
    # whose softmax over each batch's candidates becomes teacher_weight of the target
    # (trainer.teacher; its embeddings of every training text are computed once and cached)
    teacher: str | None = None
    teacher_weight: float = 0.5
    teacher_temperature: float = 0.05
    teacher_only_right: bool = True  # false: distil every query, also those whose positive the teacher ranks below another


@dataclass
class MatryoshkaInfoNCE:
    """Weighted sum over dimensions of InfoNCE on truncated, re-normalised embeddings.

    The encoder runs once; each dimension only slices the same embeddings, as in
    sentence-transformers' ``MatryoshkaLoss``.

    Args:
        dims: prefix lengths to train, e.g. [384, 256, 128, 64]; each at most the model's dimension.
        weights: one per dim (None: all 1).
        temperature: softmax temperature of InfoNCE.
        gather: take the positives and hard negatives of every process as negatives
            (cross-device negatives). With it, N processes of batch b equal one of batch N*b.
        symmetric: add the document -> query direction (each positive against every query of
            the global batch) and average the two, as CLIP does. It asks the document side to
            tell queries apart too, which keeps the embedding space from collapsing around code.
        teacher_weight, teacher_temperature, teacher_only_right: with a teacher's embeddings
            passed to the call, the share of each softmax's target that is the teacher's softmax
            over the same candidates, at every dim, and whether only where it ranks the positive
            first (see :func:`info_nce`).

    Inputs:
        queries: (b, D) this process's queries. positives: (b, D) their documents.
        negatives: (b * h, D) or None, ``h`` hard negatives per query, grouped by query.
        teacher: None, or the teacher's L2-normalised embeddings of the same texts: queries (b, T)
            and documents (b * (1 + h), T), positives first. No gradient flows into them.

    Example:
        >>> loss_fn = MatryoshkaInfoNCE(dims=[32, 16], temperature=0.05)
        >>> q, d = torch.randn(4, 32), torch.randn(4, 32)
        >>> total, per_dim = loss_fn(q, d)
    """

    dims: list[int]
    weights: list[float] | None = None
    temperature: float = 0.05
    gather: bool = True
    symmetric: bool = False
    teacher_weight: float = 0.0
    teacher_temperature: float = 0.05
    teacher_only_right: bool = True

    @classmethod
    def from_config(cls, cfg: LossConfig, dims: list[int]) -> MatryoshkaInfoNCE:
        """The loss a recipe's ``loss`` section describes, over ``dims`` (checked against the model)."""
        weight = cfg.teacher_weight if cfg.teacher else 0.0
        return cls(dims, cfg.matryoshka_weights, cfg.temperature, cfg.gather_across_devices, cfg.symmetric,
                   weight, cfg.teacher_temperature, cfg.teacher_only_right)

    def __post_init__(self) -> None:
        if self.weights is not None and len(self.weights) != len(self.dims):
            raise CodetuneError(
                f"loss.matryoshka_weights: {len(self.weights)} weights for {len(self.dims)} dims {self.dims}; give one per dim, or null for all 1"
            )
        if not self.temperature > 0:
            raise CodetuneError(f"loss.temperature: {self.temperature} must be above 0")
        if not 0 <= self.teacher_weight <= 1:
            raise CodetuneError(f"loss.teacher_weight: {self.teacher_weight} must be in [0, 1]")
        if not self.teacher_temperature > 0:
            raise CodetuneError(f"loss.teacher_temperature: {self.teacher_temperature} must be above 0")

    def __call__(
        self,
        queries: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor | None = None,
        teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Returns the weighted total (scalar) and the unweighted loss at each dim (detached)."""
        queries, positives = queries.float(), positives.float()
        b = queries.shape[0]
        negatives = negatives.float() if negatives is not None else None
        candidates, all_queries = self._pool(queries, positives, negatives)
        offset = rank() * b if self.gather else 0
        labels = torch.arange(offset, offset + b, device=queries.device)  # (b,)
        t_forward = t_back = None
        if teacher is not None and self.teacher_weight > 0:
            tq, td = (t.float() for t in teacher)
            tb = td[:b]  # the teacher's positives
            t_candidates, t_all_queries = self._pool(tq, tb, td[b:] if td.shape[0] > b else None)
            t_forward = tq @ t_candidates.T  # (b, C): the same candidates, as the teacher scores them
            t_back = tb @ t_all_queries.T if self.symmetric else None  # (b, b * world)
        soft = {"teacher_weight": self.teacher_weight, "teacher_temperature": self.teacher_temperature,
                "teacher_only_right": self.teacher_only_right}
        weights = self.weights or [1.0] * len(self.dims)
        total = queries.new_zeros(())
        per_dim = {}
        for dim, weight in zip(self.dims, weights):
            q = F.normalize(queries[:, :dim], dim=-1)  # (b, dim)
            c = F.normalize(candidates[:, :dim], dim=-1)  # (C, dim)
            loss = info_nce(q, c, labels, self.temperature, t_forward, **soft)
            if self.symmetric:
                p = F.normalize(positives[:, :dim], dim=-1)  # (b, dim): this process's positives
                back = info_nce(p, F.normalize(all_queries[:, :dim], dim=-1), labels, self.temperature, t_back, **soft)
                loss = 0.5 * (loss + back)
            per_dim[dim] = loss.detach()
            total = total + weight * loss
        return total, per_dim

    def _pool(
        self, queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every candidate (C, D) and the queries the documents are scored against ((b * world, D) when gathered)."""
        if not self.gather:
            candidates = positives if negatives is None else torch.cat([positives, negatives])
            return candidates, queries
        # Gather positives and negatives separately so every rank's candidate order is
        # [all positives, all negatives]: the layout one process with the whole batch sees.
        pos = gather_with_grad(positives)  # (b * world, D)
        neg = gather_with_grad(negatives) if negatives is not None else None
        candidates = pos if neg is None else torch.cat([pos, neg])
        all_queries = gather_with_grad(queries) if self.symmetric else queries  # (b * world, D)
        return candidates, all_queries
