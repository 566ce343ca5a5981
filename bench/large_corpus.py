"""A 1,000,000-document corpus through the evaluator: time and peak memory, fp16 and fp32 corpus.

    python bench/large_corpus.py [--docs 1000000] [--queries 1000] [--dims 384 128]
    accelerate launch --multi_gpu --num_processes 2 bench/large_corpus.py --child fp16   # per-rank share

The evaluator is the real one (:func:`trainer.evaluator.evaluate`: length-sorted batches, corpus
kept at full dimension in ``corpus_dtype``, every dimension scored block by block). The encoder is
not all-MiniLM-L6-v2: a million texts through it take over an hour on 2 CPU cores. It is a
``StaticEmbedding`` (one random 384-dimensional vector per word of a 20,000-word vocabulary,
averaged), so encoding costs little more than tokenising and the embeddings have MiniLM's size;
documents are 10-20 random words, and each query is 5 words of its one relevant document plus 2
others. What is measured is the evaluator's own work at that scale: batching, storing and
scoring a million embeddings.

Each configuration runs in a fresh child process that reports its own peak resident memory
(``ru_maxrss``), the memory it held before evaluating (model and corpus texts), the encoding and
scoring times, and the size of the corpus embeddings. The goal is a peak no more than the
embeddings plus 2 GB, with no step quadratic in the corpus size.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GB = 1024**3
DTYPES = {"fp16": 2, "fp32": 4}


def rss_gb() -> float:
    """This process's resident memory now, GB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / GB


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB  # ru_maxrss is in KB on Linux


def static_model(dim: int, vocabulary: int = 20000, seed: int = 0):
    """A ``StaticEmbedding`` over a word-level vocabulary of random words, and those words."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz_"
    words = sorted({"".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(vocabulary)})
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    torch.manual_seed(seed)  # every process must hold the same model
    model = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=dim)], device="cpu")
    return model, words


def synthetic(words: list[str], docs: int, queries: int, seed: int = 0):
    """A BEIR set of ``docs`` random-word documents and ``queries`` queries, one relevant document each."""
    from trainer.data.beir import BeirData

    rng = random.Random(seed)
    data = BeirData()
    for i in range(docs):
        data.corpus[f"d{i}"] = {"title": "", "text": " ".join(rng.choices(words, k=rng.randint(10, 20)))}
    for i in range(queries):
        target = f"d{rng.randrange(docs)}"
        own = data.corpus[target]["text"].split()
        data.queries[f"q{i}"] = " ".join(rng.sample(own, 5) + rng.choices(words, k=2))
        data.qrels[f"q{i}"] = {target: 1}
    return data


def child(args: argparse.Namespace) -> None:
    import torch

    from trainer import distributed
    from trainer.evaluator import evaluate
    from trainer.retrieval import encode_share

    distributed.join_launch()
    model, words = static_model(args.dim)
    data = synthetic(words, args.docs, args.queries)
    dtype = torch.float16 if args.child == "fp16" else torch.float32
    before = rss_gb()
    timings = {}
    real = encode_share

    def timed(*a, **k):  # the evaluator's encoding, timed apart from its scoring
        t0 = time.perf_counter()
        out = real(*a, **k)
        timings[a[2]] = time.perf_counter() - t0
        return out

    import trainer.evaluator

    trainer.evaluator.encode_share = timed
    t0 = time.perf_counter()
    metrics = evaluate(model, data, args.dims, batch_size=1024, show_progress=False, across_processes=True,
                       corpus_dtype=dtype)
    total = time.perf_counter() - t0
    print(json.dumps({
        "rank": distributed.rank(),
        "world": distributed.world_size(),
        "dtype": args.child,
        "encode_s": timings["document"] + timings["query"],
        "score_s": total - timings["document"] - timings["query"],
        "rss_before_gb": before,
        "peak_rss_gb": peak_rss_gb(),
        "embeddings_gb": args.docs / distributed.world_size() * args.dim * DTYPES[args.child] / GB,
        "ndcg@10": {dim: m["ndcg@10"] for dim, m in metrics.items()},
    }))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384, help="the encoder's dimension")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 128], help="Matryoshka dimensions scored")
    parser.add_argument("--child", choices=list(DTYPES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"{args.docs:,} documents, {args.queries:,} queries, dims {args.dims}, StaticEmbedding({args.dim})")
    results = {}
    for dtype in DTYPES:
        cmd = [sys.executable, __file__, "--child", dtype, "--docs", str(args.docs), "--queries", str(args.queries),
               "--dim", str(args.dim), "--dims", *map(str, args.dims)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = results[dtype] = json.loads(proc.stdout.strip().splitlines()[-1])
        bound = r["embeddings_gb"] + 2
        verdict = "met" if r["peak_rss_gb"] <= bound else "MISSED"
        print(
            f"corpus {dtype}: encode {r['encode_s']:6.1f} s, score {r['score_s']:6.1f} s, "
            f"embeddings {r['embeddings_gb']:.2f} GB, RSS before {r['rss_before_gb']:.2f} GB, "
            f"peak {r['peak_rss_gb']:.2f} GB (goal <= {bound:.2f}: {verdict}), ndcg@10 {r['ndcg@10']}"
        )
    half, full = results["fp16"], results["fp32"]
    print(f"fp16 / fp32: peak RSS {half['peak_rss_gb'] / full['peak_rss_gb']:.2f}x, "
          f"scoring time {half['score_s'] / full['score_s']:.2f}x")


if __name__ == "__main__":
    main()
