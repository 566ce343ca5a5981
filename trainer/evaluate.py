"""Score a model on a BEIR-format folder at every Matryoshka dimension.

    python -m trainer.evaluate --model default --data DIR [--split test] [--dims 384 256 128 64]
                               [--output results.json] [--corpus-dtype fp16]
    accelerate launch --multi_gpu --num_processes N -m trainer.evaluate ...   # each process encodes 1/N

Under ``accelerate launch`` every process encodes and scores its share; the main process prints
and writes the same metrics one process would.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.data.beir import load_beir
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
    parser.add_argument(
        "--corpus-dtype", choices=("fp16", "fp32"), default="fp16",
        help="how corpus embeddings are kept (fp16: half the memory; scores are fp32 either way)",
    )
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model")
    args = parser.parse_args(argv)

    # Imports that pull in torch come after argument parsing so --help is instant.
    import torch

    from trainer.distributed import join_launch, rank
    from trainer.evaluator import evaluate, resolve_dims
    from trainer.models import load_model

    if args.output and Path(args.output).is_dir():
        raise CodetuneError(f"--output {args.output}: is a folder, expected a file path")
    data = load_beir(args.data, args.split)  # every process reads it: all of them fail alike on bad input
    device = join_launch()
    model = load_model(args.model, trust_remote_code=args.trust_remote_code, device=str(device))
    dims = resolve_dims(args.dims, model.get_embedding_dimension())
    dtype = torch.float16 if args.corpus_dtype == "fp16" else torch.float32
    metrics = evaluate(model, data, dims, batch_size=args.batch_size, across_processes=True, corpus_dtype=dtype)
    if rank() != 0:
        return 0
    print_table(metrics_table(metrics, title=f"{args.model} on {args.data} ({args.split})"))
    if args.output:
        atomic_write_json(
            args.output,
            {"model": args.model, "data": str(args.data), "split": args.split, "corpus_dtype": args.corpus_dtype,
             "metrics": metrics},
        )
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
