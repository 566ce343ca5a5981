"""How much each source weighs in training: as mined (``proportional``), or temperature-sampled.

With many projects, rows are dominated by the largest few (numpy, the standard library), and the
model learns their idioms at the cost of everyone else's. Temperature sampling, as multilingual
models balance languages (XLM-R, mT5: share of source i ∝ n_i^α), flattens that: α = 1 keeps the
proportions, α = 0 gives every source the same number of rows, α = 0.5 sits between. The total
number of rows stays the same: large sources are subsampled, small ones repeated, with a seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from trainer.errors import CodetuneError

if TYPE_CHECKING:
    import datasets

PROPORTIONAL = "proportional"


def mix_alpha(mix: str | float) -> float | None:
    """``data.mix`` as an exponent: None for ``proportional``, else a float in [0, 1].

    Raises:
        CodetuneError: naming ``data.mix``.
    """
    if mix == PROPORTIONAL:
        return None
    try:
        alpha = float(mix)
    except (TypeError, ValueError):
        raise CodetuneError(f"data.mix: {mix!r} is neither {PROPORTIONAL!r} nor an exponent in [0, 1]") from None
    if not 0.0 <= alpha <= 1.0:
        raise CodetuneError(f"data.mix: {alpha} must be between 0 (every source equal) and 1 (proportional)")
    return alpha


def target_sizes(sizes: list[int], alpha: float) -> list[int]:
    """Rows per source ∝ size^α, summing to ``sum(sizes)`` (largest remainders get the leftover rows).

        >>> target_sizes([900, 100], 0.0)
        [500, 500]
        >>> target_sizes([900, 100], 0.5)
        [750, 250]
    """
    total = sum(sizes)
    weights = np.array([n**alpha if n else 0.0 for n in sizes], dtype=float)
    if total == 0 or weights.sum() == 0:
        return list(sizes)
    exact = total * weights / weights.sum()
    out = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - out), kind="stable")[: total - out.sum()]:
        out[i] += 1
    return out.tolist()


def mix_sources(
    parts: list[tuple[str, datasets.Dataset]], mix: str | float, seed: int = 0
) -> tuple[list[tuple[str, datasets.Dataset]], dict]:
    """Each source's rows resampled to its share under ``mix``.

    Args:
        parts: (source label, rows) per source.
        mix: ``"proportional"`` (rows untouched) or α (see :func:`target_sizes`).
        seed: draws which rows a source keeps or repeats.

    Returns:
        The resampled parts, and the report: ``mix``, ``rows_before`` and ``rows_after`` per source.
    """
    alpha = mix_alpha(mix)
    before = [len(rows) for _, rows in parts]
    if alpha is None:
        out = parts
    else:
        rng = np.random.default_rng(seed)
        out = []
        for (label, rows), n, target in zip(parts, before, target_sizes(before, alpha)):
            if target != n:
                # every row target // n times, then target % n distinct rows drawn without replacement
                extra = rng.permutation(n)[: target % n]
                rows = rows.select(np.sort(np.concatenate([np.tile(np.arange(n), target // n), extra])).tolist())
            out.append((label, rows))
    report = {
        "mix": PROPORTIONAL if alpha is None else alpha,
        "rows_before": {label: n for (label, _), n in zip(parts, before)},
        "rows_after": {label: len(rows) for label, rows in out},
    }
    return out, report
