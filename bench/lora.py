"""What a LoRA step costs against a full fine-tuning step on the same model and batches, side by side.

    python bench/lora.py                                  # mpnet (110M), 128 tokens, batch 32, GradCache 8, bf16
    python bench/lora.py --model default --dims 384 256 128 64 --chunk 0

Each case is a short run (``train.max_steps``, nothing held out, no checkpoints) in its own process,
so its peak resident memory is its own, on the same standard-library batches in the shape of
``recipes/configs/lora.yaml`` (docstring queries, length-grouped batches):

* LoRA with peft's dropout on every adapted layer's input (0.05) and the model's attention dropout;
* LoRA without peft's dropout; LoRA without either (``lora.yaml`` today);
* full fine-tuning (``recipes/matryoshka.py``) with the model's attention dropout, at the same length.

pairs/s leaves out the first step (warm-up). Quality is not measured here: see docs/evaluate.md, "Compare methods".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import COLUMNS, _cells, _row, launch  # noqa: E402

CASES = (
    ("LoRA, dropout 0.05 + attention", "lora", ["lora.dropout=0.05", "model.attention_dropout=null"]),
    ("LoRA, attention dropout only", "lora", ["lora.dropout=0", "model.attention_dropout=null"]),
    ("LoRA, no dropout (lora.yaml)", "lora", ["lora.dropout=0", "model.attention_dropout=0"]),
    ("full, attention dropout", "matryoshka", ["model.attention_dropout=null"]),
)

WIDTH = max(len(label) for label, _, _ in CASES) + 2

# matryoshka.yaml's levers off, so that the full case trains what lora.yaml trains.
FULL_AS_LORA = [
    "model.pca_rotation=false", "model.pca_refit=false", "data.query_forms=[docstring]", "loss.symmetric=false",
    "loss.matryoshka_weights=null", "train.group_by_length=true", "train.length_buckets=1",
    "train.group_by_source=null", "train.source_share=1.0", "merge.alpha=1.0",
]


def main() -> None:
    parser = argparse.ArgumentParser(description="LoRA vs full fine-tuning: pairs/s and peak memory per dropout")
    parser.add_argument("--model", default="mpnet-base", help="model.name: mpnet-base, default, a folder")
    parser.add_argument("--dims", type=int, nargs="+", default=[768, 512, 256, 128, 64], help="the Matryoshka dims")
    parser.add_argument("--steps", type=int, default=8, help="steps per case (the first is left out)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=8, help="train.grad_cache_chunk (0: off)")
    parser.add_argument("--precision", default="auto", help="mixed_precision (auto: bf16 where the hardware has it)")
    parser.add_argument("--max-memory-gb", type=float, default=0, help="cap each case's heap; 0: no cap")
    args = parser.parse_args()
    common = [
        f"model.name={args.model}", f"loss.matryoshka_dims={args.dims}", f"model.max_seq_length={args.seq_len}",
        f"train.grad_cache_chunk={args.chunk}", f"mixed_precision={args.precision}", f"train.max_steps={args.steps}",
        "data.test_fraction=0", "train.checkpoint_every=0", "train.log_every=1", "tracking.wandb=disabled",
    ]
    results = {}
    for label, recipe, overrides in CASES:
        extra = FULL_AS_LORA if recipe == "matryoshka" else []
        results[label] = launch([*common, *extra, *overrides], args.max_memory_gb, recipe=recipe)
        print(f"  {label}: {results[label]}", file=sys.stderr)
    print(f"{args.model}, stdlib pairs, batch 32, {args.seq_len} tokens, GradCache {args.chunk or 'off'}, "
          f"{args.precision}, {args.steps} steps (the first left out)")
    print(_row("case", [name for name, _ in COLUMNS], WIDTH))
    first = results[CASES[0][0]]
    for label, r in results.items():
        print(_row(label, _cells(r, args.max_memory_gb), WIDTH))
        if r is not first and not (r.get("oom") or first.get("oom")):
            print(_row("  vs the first", [f"{get(r) / get(first):.2f}x" for _, get in COLUMNS], WIDTH))


if __name__ == "__main__":
    main()
