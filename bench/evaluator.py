"""Our evaluator against sentence-transformers' InformationRetrievalEvaluator, side by side.

    python bench/evaluator.py [--model default] [--data tests/fixtures/beir_code] [--dims 384 256 128 64]

The reference scores one dimension per evaluator, so it encodes queries and corpus once per
dimension; ours encodes once and truncates. Prints each side's time, the ratio, and the largest
metric difference between them (which must be ~0).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator  # noqa: E402

from trainer.data.beir import load_beir  # noqa: E402
from trainer.evaluator import evaluate  # noqa: E402
from trainer.models import load_model  # noqa: E402


def reference(model, data, dims: list[int]) -> dict[str, dict[str, float]]:
    corpus = {i: data.document_text(i) for i in data.corpus}
    out = {}
    for dim in dims:
        ev = InformationRetrievalEvaluator(
            data.queries, corpus, data.relevant(), precision_recall_at_k=[1, 5, 10, 100], accuracy_at_k=[1],
            truncate_dim=dim, write_csv=False, batch_size=64,
        )
        scores = ev(model)
        out[str(dim)] = {k.split("cosine_")[1]: v for k, v in scores.items() if "cosine_" in k}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "beir_code"))
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64])
    args = parser.parse_args()
    model = load_model(args.model)
    data = load_beir(args.data)
    print(f"{len(data.queries)} queries, {len(data.corpus)} documents, dims {args.dims}, model {args.model}")

    evaluate(model, data, args.dims[:1], show_progress=False)  # warm-up: first-call allocations
    t0 = time.perf_counter()
    ours = evaluate(model, data, args.dims, show_progress=False)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = reference(model, data, args.dims)
    t_ref = time.perf_counter() - t0

    diff = max(abs(ours[d][m] - ref[d][m]) for d in ours for m in ours[d])
    print(f"codetune evaluator           {t_ours:8.2f} s")
    print(f"InformationRetrievalEvaluator {t_ref:7.2f} s")
    print(f"speed-up                     {t_ref / t_ours:8.2f}x   (max metric difference {diff:.2e})")


if __name__ == "__main__":
    main()
