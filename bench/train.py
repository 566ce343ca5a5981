"""codetune's Matryoshka recipe against sentence-transformers' SentenceTransformerTrainer, side by side.

    python bench/train.py                          # default recipe vs the reference, then quality on every set
    python bench/train.py --ref-epochs 2 --ours train.epochs=2 --skip-quality
    python bench/train.py --steps 20               # throughput only: both sides at the same steps
    python bench/train.py --model mpnet-base --config recipes/configs/mpnet.yaml --lr 2e-5 --sets ood:networkx general
    python bench/train.py --sides reference --model mpnet-base ...   # one side (a 110M run is an hour a side on 2 cores)

Both sides train the embedded default on the standard library's training pairs, each in its own
process (so peak resident memory is its own), at the same precision, sequence length and batch
size. The reference is ``SentenceTransformerTrainer`` with ``MatryoshkaLoss(MultipleNegativesRankingLoss)``
and no-duplicate batches, its documented recipe for this task; codetune runs
``recipes/matryoshka.py`` with its YAML config and any ``--ours`` overrides. Then every model
(the base too) is scored by ``bench/quality.py``: NDCG@10 at each dim on the held-out stdlib
split, three out-of-domain projects and general code questions. Prints wall time, pairs/s, peak
memory and the quality table, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality import SET_NAMES  # noqa: E402

MATRYOSHKA_DIMS = (512, 256, 128, 64)


def matryoshka_dims(full: int) -> list[int]:
    """The full dim, then each Matryoshka dim below it: 384 -> [384, 256, 128, 64]; 768 adds 512."""
    return [full, *(d for d in MATRYOSHKA_DIMS if d < full)]


def run_reference(args, out: Path) -> dict:
    """SentenceTransformerTrainer with MatryoshkaLoss(MultipleNegativesRankingLoss), no-duplicates batches."""
    import datasets
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    from trainer.data import DataConfig, load_training_data
    from trainer.hardware import ONEDNN_CACHE_ENV
    from trainer.models import load_model

    # load_model bounds oneDNN's kernel cache for codetune; the reference runs as its users run it,
    # with oneDNN's own 1,024, unless the environment names a bound for both sides.
    os.environ.setdefault(ONEDNN_CACHE_ENV, "1024")
    model = load_model(args.model, max_seq_length=args.seq_len)
    data = load_training_data(DataConfig(), out)
    train = datasets.Dataset.from_dict({"anchor": data.train["query"], "positive": data.train["positive"]})
    dims = matryoshka_dims(model.get_sentence_embedding_dimension())
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), matryoshka_dims=dims)
    steps = args.steps if args.steps else -1
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st"), per_device_train_batch_size=args.batch_size, max_steps=steps,
        num_train_epochs=args.ref_epochs, learning_rate=args.lr, warmup_ratio=0.1, bf16=args.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        batch_sampler=BatchSamplers.NO_DUPLICATES, report_to="none", save_strategy="no", logging_steps=10_000,
        seed=42, dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=train, loss=loss)
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    model.save(str(out / "model"))
    return {"train_seconds": seconds, "pairs_per_s": result.global_step * args.batch_size / seconds, "model": str(out / "model")}


def run_ours(args, out: Path) -> dict:
    """recipes/matryoshka.py with its config; throughput from its per-step log, training time alone."""
    sys.path.insert(0, str(ROOT / "recipes"))
    from matryoshka import main

    overrides = [
        "--config", args.config, f"model.name={args.model}", f"output_dir={out / 'ours'}", f"model.max_seq_length={args.seq_len}", f"train.batch_size={args.batch_size}",
        f"mixed_precision={args.precision}", "train.checkpoint_every=0", "train.log_every=1", "tracking.wandb=disabled",
        *([f"train.max_steps={args.steps}"] if args.steps else []), *args.ours,
    ]
    assert main(overrides) == 0
    log = [json.loads(line) for line in (out / "ours" / "log.jsonl").read_text().splitlines()]
    step_seconds = [args.batch_size / r["pairs_per_s"] for r in log if "pairs_per_s" in r]
    seconds = sum(step_seconds)
    return {"train_seconds": seconds, "pairs_per_s": len(step_seconds) * args.batch_size / seconds, "model": str(out / "ours" / "final")}


def side_main(args) -> None:
    """Child process: run one side, keep its model in ``--keep``, print its JSON."""
    out = Path(args.keep)
    fn = run_ours if args.side == "ours" else run_reference
    result = fn(args, out)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=0, help="both sides: this many steps (0: the sides' epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--precision", choices=["no", "bf16"], default="bf16", help="both sides (bf16: AMX/AVX512-BF16 CPUs, GPUs)")
    parser.add_argument("--lr", type=float, default=5e-5, help="the reference's learning rate")
    parser.add_argument("--ref-epochs", type=float, default=1.0, help="the reference's epochs: match codetune's wall time")
    parser.add_argument("--ours", nargs="*", default=[], help="key=value overrides for recipes/matryoshka.py")
    parser.add_argument("--model", default="default", help="both sides' base model (model.name: default, mpnet-base, a folder)")
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "matryoshka.yaml"),
                        help="codetune's YAML (recipes/configs/mpnet.yaml for mpnet-base)")
    parser.add_argument("--sides", nargs="+", choices=["reference", "ours"], default=["reference", "ours"],
                        help="run only these sides (the base is always scored)")
    parser.add_argument("--sets", nargs="+", choices=SET_NAMES, help="quality sets (all by default)")
    parser.add_argument("--dims", type=int, nargs="+", help="quality at these dims (default: the model's full dim and each below)")
    parser.add_argument("--skip-quality", action="store_true", help="throughput and memory only")
    parser.add_argument("--out", help="keep both sides' models in this folder (default: a temporary one)")
    parser.add_argument("--side", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--keep", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side_main(args)
        return

    if args.out and Path(args.out).exists():
        sys.exit(f"--out {args.out} exists: name a new folder (nothing in it is replaced)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.out:
            tmp = args.out
        results = {}
        for side in args.sides:
            keep = Path(tmp) / side
            keep.mkdir(parents=True)
            cmd = [sys.executable, __file__, "--side", side, "--keep", str(keep)] + sys.argv[1:]
            env = {**os.environ, "WANDB_MODE": "disabled"}
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            results[side] = {**json.loads(line[len("RESULT "):]), "wall_seconds": time.perf_counter() - t0}
        names = {"reference": "SentenceTransformerTrainer", "ours": "codetune"}
        print(f"{args.model}, stdlib pairs, batch {args.batch_size}, sequence {args.seq_len}, precision {args.precision}")
        print(f"{'':28}{'train s':>10}{'process s':>11}{'pairs/s':>10}{'peak RSS GB':>13}")
        for side, r in results.items():
            print(f"{names[side]:28}{r['train_seconds']:10.0f}{r['wall_seconds']:11.0f}{r['pairs_per_s']:10.2f}{r['peak_rss_gb']:13.2f}")
        if len(results) == 2:
            ref, ours = results["reference"], results["ours"]
            print(f"{'ratio (codetune / ST)':28}{'':10}{'':11}{ours['pairs_per_s'] / ref['pairs_per_s']:10.2f}"
                  f"{ours['peak_rss_gb'] / ref['peak_rss_gb']:13.2f}")
        if args.skip_quality:
            return
        from quality import eval_sets, print_scores, score

        from trainer.models import load_model

        dims = args.dims or matryoshka_dims(load_model(args.model).get_sentence_embedding_dimension())
        sets = eval_sets(tuple(args.sets)) if args.sets else eval_sets()
        models = {"base": args.model, **{names[side]: r["model"] for side, r in results.items()}}
        scores = {name: score(spec, sets, dims, base_spec=args.model) for name, spec in models.items()}
        print()
        print_scores(scores, dims)

if __name__ == "__main__":
    main()
