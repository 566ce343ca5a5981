"""codetune's Matryoshka recipe against sentence-transformers' SentenceTransformerTrainer, side by side.

    python bench/train.py [--steps 20] [--batch-size 32] [--seq-len 256]

Same model (the embedded default), data (the standard-library training split), loss
(Matryoshka over 384/256/128/64 of in-batch InfoNCE at temperature 0.05 = scale 20), batch size,
sequence length, learning rate and number of steps. Each side runs in its own process, so peak
resident memory is its own. Prints pairs/s, peak memory and held-out NDCG@10 for each, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIMS = [384, 256, 128, 64]


def run_reference(steps: int, batch: int, seq: int, lr: float, out: Path) -> dict:
    """SentenceTransformerTrainer with MatryoshkaLoss(MultipleNegativesRankingLoss), no-duplicates batches."""
    import datasets
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    from trainer.data import DataConfig, load_training_data
    from trainer.data.beir import load_beir
    from trainer.evaluator import evaluate
    from trainer.models import load_model

    model = load_model("default", max_seq_length=seq)
    data = load_training_data(DataConfig(), out)
    train = datasets.Dataset.from_dict({"anchor": data.train["query"], "positive": data.train["positive"]})
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), matryoshka_dims=DIMS)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st"), per_device_train_batch_size=batch, max_steps=steps, learning_rate=lr,
        warmup_ratio=0.1, batch_sampler=BatchSamplers.NO_DUPLICATES, report_to="none", save_strategy="no",
        logging_steps=max(steps, 1), seed=42, dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    metrics = evaluate(model, load_beir(data.eval_dir), DIMS, show_progress=False)
    return {"pairs_per_s": steps * batch / seconds, "ndcg@10": metrics["384"]["ndcg@10"], "ndcg@10@128": metrics["128"]["ndcg@10"]}


def run_ours(steps: int, batch: int, seq: int, lr: float, out: Path) -> dict:
    """recipes/matryoshka.py with the same settings; throughput from its per-step log."""
    sys.path.insert(0, str(ROOT / "recipes"))
    from matryoshka import main

    code = main([
        f"output_dir={out / 'ours'}", f"train.max_steps={steps}", f"train.batch_size={batch}", f"model.max_seq_length={seq}",
        f"train.lr={lr}", "train.checkpoint_every=0", "train.log_every=1", "tracking.wandb=disabled",
    ])
    assert code == 0
    log = [json.loads(line) for line in (out / "ours" / "log.jsonl").read_text().splitlines()]
    step_times = [batch / r["pairs_per_s"] for r in log if "pairs_per_s" in r]
    after = json.loads((out / "ours" / "eval.json").read_text())["after"]["metrics"]
    return {"pairs_per_s": steps * batch / sum(step_times), "ndcg@10": after["384"]["ndcg@10"], "ndcg@10@128": after["128"]["ndcg@10"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--side", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # child process: run one side, print its JSON
        with tempfile.TemporaryDirectory() as tmp:
            fn = run_ours if args.side == "ours" else run_reference
            result = fn(args.steps, args.batch_size, args.seq_len, args.lr, Path(tmp))
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print("RESULT " + json.dumps(result))
        return

    results = {}
    for side in ("reference", "ours"):
        cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--lr", str(args.lr)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(line[len("RESULT "):])
    ref, ours = results["reference"], results["ours"]
    print(f"{args.steps} steps, batch {args.batch_size}, sequence {args.seq_len}, all-MiniLM-L6-v2, stdlib pairs")
    print(f"{'':28}{'pairs/s':>10}{'peak RSS GB':>13}{'NDCG@10 384':>13}{'NDCG@10 128':>13}")
    for name, r in (("SentenceTransformerTrainer", ref), ("codetune", ours)):
        print(f"{name:28}{r['pairs_per_s']:10.2f}{r['peak_rss_gb']:13.2f}{100 * r['ndcg@10']:13.2f}{100 * r['ndcg@10@128']:13.2f}")
    print(f"{'ratio (codetune / ST)':28}{ours['pairs_per_s'] / ref['pairs_per_s']:10.2f}"
          f"{ours['peak_rss_gb'] / ref['peak_rss_gb']:13.2f}{ours['ndcg@10'] / ref['ndcg@10']:13.3f}{ours['ndcg@10@128'] / ref['ndcg@10@128']:13.3f}")


if __name__ == "__main__":
    main()
