"""Score a model on a BEIR-format folder at every Matryoshka dimension.

    python -m trainer.evaluate --model default --data DIR [--split test] [--dims 384 256 128 64]
                               [--output results.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.errors import CodetuneError, cli_main
from trainer.fileio import atomic_write_json
from trainer.tables import metrics_table, print_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="default, a local folder, or a hub name")
    parser.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("--split", default="test", help="qrels/<split>.tsv to score (default: test)")
    parser.add_argument("--dims", type=int, nargs="+", help="dimensions (default: full and 512/256/128/64 below it)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model")
    args = parser.parse_args(argv)

    # Imports that pull in torch come after argument parsing so --help is instant.
    from trainer.data.beir import load_beir
    from trainer.evaluator import evaluate, resolve_dims
    from trainer.models import load_model

    if args.output and Path(args.output).is_dir():
        raise CodetuneError(f"--output {args.output}: is a folder, expected a file path")
    data = load_beir(args.data, args.split)
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    dims = resolve_dims(args.dims, model.get_embedding_dimension())
    metrics = evaluate(model, data, dims, batch_size=args.batch_size)
    print_table(metrics_table(metrics, title=f"{args.model} on {args.data} ({args.split})"))
    if args.output:
        atomic_write_json(
            args.output, {"model": args.model, "data": str(args.data), "split": args.split, "metrics": metrics}
        )
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
