"""Mine training data from code, and add hard negatives to it.

    python -m trainer.data mine SRC [SRC ...] --out DIR [--exclude-projects NAME ...] [--test-fraction F] [--seed N] [--group-by file|folder]
    python -m trainer.data negatives --model SPEC --data DIR [--out FILE] [--window START STOP] [--per-query N]

``mine`` writes ``DIR/train.jsonl``, ``DIR/test/`` (a BEIR folder) and ``DIR/report.json``, and
prints what it found per language and what it skipped. ``stdlib`` (or the standard library's
path) as a SRC mines the running Python's standard library, without its tests and GUI code.
Under ``accelerate launch --multi_gpu --num_processes N -m trainer.data mine ...`` (gloo on a
machine without GPUs) each process reads, parses and fingerprints every N-th file; the main
process writes the files one process would.

``negatives`` reads ``DIR/train.jsonl`` (or a ``.jsonl`` file given as ``--data``) and writes the
rows with a ``negatives`` column to ``train.negatives.jsonl`` beside it, never over the input,
unless ``--out`` names the input itself, which is then replaced atomically. Under
``accelerate launch --multi_gpu --num_processes N -m trainer.data negatives ...`` each process
encodes and searches 1/N; the main process writes the same file one process would.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

# The settings classes hold the parser's defaults, so every start, --help included, imports what
# the commands need (datasets, tree-sitter; negatives: torch, sentence-transformers): nothing to defer.
from trainer.data import DataConfig
from trainer.data.formats import load_pairs, write_jsonl
from trainer.data.mining import mine
from trainer.data.negatives import NegativesConfig, mine_hard_negatives
from trainer.data.sources import is_package, trees_of
from trainer.data.splits import GROUP_BY, SplitConfig, split_mined, write_mined
from trainer.data.stdlib import is_stdlib, stdlib_tree
from trainer.distributed import join_launch, rank
from trainer.errors import CodetuneError, cli_main
from trainer.models import load_model


def _parser() -> argparse.ArgumentParser:
    split, negatives = SplitConfig(), NegativesConfig()
    parser = argparse.ArgumentParser(prog="python -m trainer.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    mine = commands.add_parser("mine", help="mine (docstring, function) pairs from source trees")
    mine.add_argument(
        "sources", nargs="+", metavar="SRC",
        help="folder or file to mine (a git work tree: its tracked files); 'stdlib'; 'pkg:NAME' or 'pkg:*' for installed distributions",
    )
    mine.add_argument(
        "--exclude-projects", nargs="*", default=DataConfig().exclude_projects, metavar="NAME",
        help="projects pkg: sources leave out, vendored copies too (default: none)",
    )
    mine.add_argument("--out", required=True, type=Path, help="folder to write train.jsonl, test/ and report.json to")
    mine.add_argument(
        "--test-fraction", type=float, default=split.test_fraction, help="share of files held out (default %(default)s)"
    )
    mine.add_argument("--seed", type=int, default=split.seed, help="draws the split (default %(default)s)")
    mine.add_argument(
        "--group-by", choices=GROUP_BY, default=split.group_by, help="unit kept on one side (default %(default)s)"
    )
    mine.add_argument("--max-test-queries", type=int, default=split.max_test_queries, help="cap on held-out queries")

    neg = commands.add_parser("negatives", help="add hard negatives to mined or user training rows")
    neg.add_argument("--model", required=True, help="model spec: 'default', a folder or a hub name")
    neg.add_argument("--data", required=True, type=Path, help="folder holding train.jsonl, or a .jsonl file")
    neg.add_argument(
        "--out", type=Path, default=None, help="output file (default: train.negatives.jsonl beside the input)"
    )
    neg.add_argument(
        "--window",
        nargs=2,
        type=int,
        default=list(negatives.window),
        metavar=("START", "STOP"),
        help=f"0-based ranks [START, STOP) (default {' '.join(map(str, negatives.window))})",
    )
    neg.add_argument(
        "--per-query", type=int, default=negatives.per_query, help="negatives per row at most (default %(default)s)"
    )
    neg.add_argument(
        "--batch-size", type=int, default=negatives.batch_size, help="encoding batch size (default %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "mine":
        _mine(args)
    else:
        _negatives(args)
    return 0


def _mine(args: argparse.Namespace) -> None:
    split = SplitConfig(args.test_fraction, args.seed, args.group_by, args.max_test_queries)
    trees = []
    for source in args.sources:
        if is_stdlib(source):
            trees.append(stdlib_tree())
        elif not is_package(source) and not Path(source).expanduser().exists():
            raise CodetuneError(f"{source}: not found")
        else:
            trees += trees_of(source, args.exclude_projects)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # accelerate only then: plain mining needs no device
    if launched:
        join_launch()
    result = mine(trees, across_processes=True)
    if launched and rank() != 0:
        return  # every process holds the result; the main one writes it
    summary = write_mined(args.out, split_mined(result, split), result.report, split)
    _print_report(summary)


def _print_report(summary: dict) -> None:
    mining, split = summary["mining"], summary["split"]
    console = Console()
    table = Table(title=f"mined in {mining['seconds']:.1f} s")
    for column in ("language", "files", "functions", "documents", "pairs"):
        table.add_column(column, justify="left" if column == "language" else "right")
    for language in sorted(mining["files"]):
        table.add_row(
            language, *(str(mining[k].get(language, 0)) for k in ("files", "functions", "documents", "pairs"))
        )
    console.print(table)
    for title, counts in (("files skipped", mining["skipped_files"]), ("functions dropped", mining["dropped"])):
        if counts:
            console.print(f"{title}: " + ", ".join(f"{reason} {n}" for reason, n in counts.items()))
    console.print(
        f"train: {split['train_pairs']} pairs from {split['train_files']} files; "
        f"test: {split['test_queries']} queries over {split['test_documents']} documents "
        f"from {split['test_files']} files"
    )


def _negatives(args: argparse.Namespace) -> None:
    source = args.data / "train.jsonl" if args.data.is_dir() else args.data
    out = args.out or source.with_name(f"{source.stem}.negatives.jsonl")
    config = NegativesConfig(window=tuple(args.window), per_query=args.per_query, batch_size=args.batch_size)
    rows = load_pairs(source)  # every process reads it: all of them fail alike on bad input
    device = join_launch()
    model = load_model(args.model, device=str(device))
    start = time.perf_counter()
    rows = mine_hard_negatives(model, rows, config, show_progress=True, across_processes=True)
    if rank() != 0:
        return
    write_jsonl(out, rows)
    counts = [len(n) for n in rows["negatives"]]
    full = sum(c == args.per_query for c in counts)
    print(
        f"{len(rows)} rows, {sum(counts)} negatives ({full} rows with {args.per_query}, {counts.count(0)} with none) "
        f"in {time.perf_counter() - start:.1f} s -> {out}"
    )


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
