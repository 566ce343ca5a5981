"""The ``codetune`` command: every tool of the package behind one name.

Each subcommand is the module's own command line, unchanged (``codetune evaluate ARGS`` is
``python -m trainer.evaluate ARGS``); ``codetune train`` is :mod:`trainer.launch`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trainer import __version__
from trainer.errors import CodetuneError, cli_main

# name -> (module whose main() runs it, words put before the user's, one-line summary)
COMMANDS = {
    "mine": ("trainer.data.__main__", ["mine"], "mine (docstring, function) pairs from source trees"),
    "negatives": ("trainer.data.__main__", ["negatives"], "add hard negatives to training rows"),
    "evaluate": ("trainer.evaluate", [], "score a model on a BEIR folder at every Matryoshka dimension"),
    "search": ("trainer.search", [], "index a codebase with a model, then ask it questions"),
    "compare": ("trainer.compare", [], "compare run folders: one table, one plot"),
    "train": ("trainer.launch", [], "run a recipe (matryoshka, lora, projection_head) under accelerate's launcher"),
}

EXAMPLES = """\
examples:
  codetune mine ~/src/myrepo --out data/myrepo
  codetune negatives --model default --data data/myrepo
  codetune train matryoshka data.source=data/myrepo/train.negatives.jsonl data.eval=data/myrepo/test output_dir=runs/x
  codetune train --multi_gpu --num_processes 8 matryoshka --config bge output_dir=runs/bge
  codetune train lora lora.rank=16
  codetune evaluate --model runs/x/final --data data/myrepo/test --dims 384 128
  codetune search index src/ --model runs/x/final --out .codetune-index
  codetune search query .codetune-index "where do we parse the config?" -k 5
  codetune compare runs/matryoshka runs/lora runs/head --plot compare.png

`codetune COMMAND --help` lists a command's options; `codetune train RECIPE --help` a recipe's.
Bad input is one `error:` line and exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codetune",
        description="Fine-tune embedding models for code retrieval, evaluate them, search code with them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"codetune {__version__}")
    commands = "\n".join(f"  {name:<10} {summary}" for name, (_, _, summary) in COMMANDS.items())
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help=f"one of:\n{commands}")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _unknown(message: str):
    raise CodetuneError(f"codetune: {message} (codetune --help lists the commands)")


def run(argv: list[str] | None = None) -> int:
    parser = _parser()
    parser.error = _unknown
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    module, words, _ = COMMANDS[args.command]
    return importlib.import_module(module).main([*words, *args.args]) or 0


def main(argv: list[str] | None = None) -> int:
    """The console script's entry point; returns the exit status."""
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
