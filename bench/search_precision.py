"""The cost frontier of an index: bytes per function against hit@5 and NDCG@10, every dim x precision.

    python bench/search_precision.py [--models default runs/x/final] [--set heldout|click] [--json out.json]

``--set heldout`` (default) is the default run's held-out split of the standard library (the
``in-domain`` set of ``bench/quality.py``: docstring summaries as queries, functions without their
docstring as documents, files no training row came from). ``--set click`` is the question set of
``bench/search_questions.py`` over click's functions as ``index`` stores them (its encodings are
shared with that bench through the embedding cache). Each model encodes the set once at full
width; every (dim, precision) cell truncates, re-normalises and stores the documents as
``index --precision`` stores them, and searches them with :class:`trainer.search.dense.DenseIndex`
(queries stay float32). Bytes per function count the vector alone; an index also stores each
function's text, which costs the same at every precision.

The table lists every cell by bytes; ``*`` marks the Pareto frontier (no cheaper cell of any model
scores as high NDCG@10).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DIMS = (384, 256, 128, 64)


def held_out() -> tuple[list[str], list, list[str], list[set]]:
    """(document texts, document keys, query texts, relevant keys per query)."""
    from trainer.data import DataConfig
    from trainer.data.beir import load_beir
    from trainer.data.stdlib import stdlib_dataset

    cfg = DataConfig()
    _, test_dir = stdlib_dataset(cfg.mining_config(), cfg.split_config())
    data = load_beir(test_dir)
    doc_ids = sorted(data.corpus)
    relevant = data.relevant()
    qids = sorted(relevant)
    return [data.document_text(d) for d in doc_ids], doc_ids, [data.queries[q] for q in qids], [relevant[q] for q in qids]


def click_questions() -> tuple[list[str], list, list[str], list[set]]:
    """As :func:`held_out`; a function's key is (path, name), so any definition of the answer counts once."""
    from search_questions import QUESTIONS, click_functions

    from trainer.search.snippets import document_text

    snippets, _ = click_functions()
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    keys = [(s.path, s.name) for s in snippets]
    return [document_text(s) for s in snippets], keys, [q["question"] for q in questions], [{(q["path"], q["name"])} for q in questions]


def score_model(spec: str, data, dims=DIMS) -> list[dict]:
    """One row per (dim, precision): bytes, hit@5 and NDCG@10 in percent."""
    from trainer.embedding_cache import cached_encode
    from trainer.metrics import ndcg_at_k
    from trainer.models import load_model
    from trainer.retrieval import normalize_truncate
    from trainer.search.dense import PRECISIONS, DenseIndex, bytes_per_vector, calibrate, quantize

    model = load_model(spec)  # at its own sequence length (256 for the default and the default run's)
    doc_texts, keys, query_texts, relevant = data
    docs, _ = cached_encode(model, doc_texts, "document")  # (N, D)
    queries, _ = cached_encode(model, query_texts, "query")  # (Q, D)
    rows = []
    for dim in dims:
        unit_docs = normalize_truncate(docs, dim).numpy()
        unit_queries = normalize_truncate(queries, dim).numpy()
        for precision in PRECISIONS:
            ranges = calibrate(unit_docs) if precision == "int8" else None
            index = DenseIndex(precision, dim, quantize(unit_docs, precision, ranges), ranges)
            _, ids = index.search(unit_queries, 10)
            ranked = [list(dict.fromkeys(keys[i] for i in row)) for row in ids]  # a key once, at its best rank
            n = len(query_texts)
            rows.append({
                "model": spec,
                "dim": dim,
                "precision": precision,
                "bytes": bytes_per_vector(dim, precision),
                "hit@5": 100 * sum(bool(set(r[:5]) & rel) for r, rel in zip(ranked, relevant)) / n,
                "ndcg@10": 100 * sum(ndcg_at_k(r, rel, 10) for r, rel in zip(ranked, relevant)) / n,
            })
    return rows


def frontier(rows: list[dict]) -> set[int]:
    """Indices of rows that no cheaper-or-equal row beats on NDCG@10."""
    best, keep = float("-inf"), set()
    for i in sorted(range(len(rows)), key=lambda i: (rows[i]["bytes"], -rows[i]["ndcg@10"])):
        if rows[i]["ndcg@10"] > best:
            best = rows[i]["ndcg@10"]
            keep.add(i)
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--set", choices=["heldout", "click"], default="heldout")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = held_out() if args.set == "heldout" else click_questions()
    rows = [row for spec in args.models for row in score_model(spec, data)]
    best = frontier(rows)
    what = "held-out standard-library functions" if args.set == "heldout" else "click functions (bench/search_questions.py)"
    print(f"{len(data[2])} queries over {len(data[0])} {what}\n")
    print("| model | dim | precision | bytes/function | hit@5 | NDCG@10 | frontier |\n|---|---:|---|---:|---:|---:|:-:|")
    for i in sorted(range(len(rows)), key=lambda i: (rows[i]["bytes"], rows[i]["model"])):
        r = rows[i]
        print(f"| {r['model']} | {r['dim']} | {r['precision']} | {r['bytes']} | {r['hit@5']:.1f} | {r['ndcg@10']:.2f} | {'*' if i in best else ''} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
