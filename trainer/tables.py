"""Rich tables for a run's results: metrics (one row per Matryoshka dimension) and where the time went."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

SHOWN = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100")


def metrics_table(metrics: dict[str, dict[str, float]], title: str = "") -> Table:
    """One row per dimension, one column per metric (in points, i.e. x100)."""
    table = Table(title=title)
    table.add_column("dim", justify="right")
    for name in SHOWN:
        table.add_column(name, justify="right")
    for dim, values in metrics.items():
        table.add_row(dim, *(f"{100 * values[name]:.2f}" for name in SHOWN))
    return table


def before_after_table(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], title: str = ""
) -> Table:
    """Per dimension: NDCG@10, MRR@10 and Recall@10 before -> after, with the change in points."""
    table = Table(title=title)
    table.add_column("dim", justify="right")
    for name in ("ndcg@10", "mrr@10", "recall@10"):
        table.add_column(f"{name} before", justify="right")
        table.add_column(f"{name} after", justify="right")
        table.add_column("Δ", justify="right")
    for dim in after:
        cells = []
        for name in ("ndcg@10", "mrr@10", "recall@10"):
            b, a = 100 * before[dim][name], 100 * after[dim][name]
            cells += [f"{b:.2f}", f"{a:.2f}", f"{a - b:+.2f}"]
        table.add_row(dim, *cells)
    return table


def phase_table(seconds: dict[str, float], title: str = "") -> Table:
    """One row per phase: wall seconds and share of the phases' total, then the total."""
    table = Table(title=title)
    for name in ("phase", "seconds", "share"):
        table.add_column(name, justify="left" if name == "phase" else "right")
    total = sum(seconds.values())
    for name, s in seconds.items():
        table.add_row(name, f"{s:.1f}", f"{100 * s / total:.0f}%" if total else "")
    table.add_section()
    table.add_row("total", f"{total:.1f}", "100%" if total else "")
    return table


def print_table(table: Table) -> None:
    """Print on stdout, wide enough that numbers never wrap in CI logs."""
    Console(width=max(120, Console().width)).print(table)
