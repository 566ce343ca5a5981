"""Compare runs on the same evaluation set: one table and one plot.

    python -m trainer.compare runs/matryoshka runs/lora runs/head [--plot compare.png] [--names full lora head]

Each run folder's ``eval.json`` holds the base model's metrics (before) and the trained model's
(after). The table has the base model once, then every run: NDCG@10 and Recall@10 per dimension.
The plot draws NDCG@10 against the dimension, one line per method.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.table import Table

from trainer.errors import CodetuneError, cli_main
from trainer.tables import print_table


def load_runs(folders: list[str], names: list[str] | None) -> dict[str, dict]:
    """Method name -> metrics per dim, the first run's ``before`` as ``base``; all on one evaluation set."""
    if names and len(names) != len(folders):
        raise CodetuneError(f"--names: {len(names)} names for {len(folders)} runs")
    methods, data = {}, None
    for i, folder in enumerate(folders):
        path = Path(folder) / "eval.json"
        if not path.is_file():
            raise CodetuneError(f"{path}: not found (did the run finish?)")
        try:
            result = json.loads(path.read_text())
            before, after = result["before"], result["after"]
        except (json.JSONDecodeError, KeyError):
            raise CodetuneError(f"{path}: not a codetune eval.json") from None
        # The set's content decides "the same set"; runs from before the fingerprint fall back
        # to the folder, resolved, so that a relative and an absolute spelling agree.
        key = before.get("data_fingerprint") or (str(Path(before.get("data") or "").resolve()), before.get("split"))
        if data is None:
            data, first = key, path
            methods["base"] = before["metrics"]
        elif key != data:
            raise CodetuneError(f"{path}: evaluated on another set than {first} ({before.get('data')}); runs must share one set")
        methods[names[i] if names else Path(folder).name] = after["metrics"]
    return methods


def plot(methods: dict[str, dict], path: Path) -> None:
    """NDCG@10 against dimension, one line per method, as a PNG."""
    import matplotlib  # here: ~0.6 s to import; a bad run folder fails before it, and load_runs never needs it

    matplotlib.use("Agg")  # no display needed; chosen before pyplot is imported
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, metrics in methods.items():
        dims = sorted(metrics, key=int)
        ax.plot([int(d) for d in dims], [100 * metrics[d]["ndcg@10"] for d in dims], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ticks = sorted({int(d) for metrics in methods.values() for d in metrics})
    ax.set_xticks(ticks, [str(t) for t in ticks])  # 64, 128, ... rather than 2^6
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("NDCG@10 (held-out code)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders holding eval.json")
    parser.add_argument("--names", nargs="+", help="a label per run (default: folder names)")
    parser.add_argument("--plot", default="compare.png", help="PNG to write (default: compare.png)")
    args = parser.parse_args(argv)
    methods = load_runs(args.runs, args.names)
    dims = sorted({d for m in methods.values() for d in m}, key=int, reverse=True)
    table = Table(title="held-out code retrieval (points)")
    table.add_column("method")
    for d in dims:
        table.add_column(f"nDCG@10 {d}", justify="right")
        table.add_column(f"R@10 {d}", justify="right")
    for name, metrics in methods.items():
        cells = []
        for d in dims:
            m = metrics.get(d)
            cells += [f"{100 * m['ndcg@10']:.2f}", f"{100 * m['recall@10']:.2f}"] if m else ["-", "-"]
        table.add_row(name, *cells)
    print_table(table)
    plot(methods, Path(args.plot))
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
