"""Questions in users' own words against one real package: what to index, and which retrieval mode wins.

    python bench/search_questions.py [--models default runs/x/final] [--dim 256] [--json out.json]

The set (``trainer/data/sets/click_questions.jsonl``) holds 66 questions about the installed
``click`` package, written as people ask them ("ask the user a yes or no question"), each with the
file and qualified name of the function that answers it (any definition of that name in that file
counts, so a ``typing.overload`` stub is as good as its implementation). The corpus is every
function click has (548, 215 of them documented), indexed as ``trainer.search`` indexes it.

For each model, three document texts are compared: the miner's code (docstring cut out, what
``index`` stored before), the function as it stands in the file (docstring and comments), and that
with the module path and qualified name in front (what ``index`` stores now); each with dense
(float32 at ``--dim``), lexical (BM25 over split identifiers) and hybrid (RRF) retrieval, through
:func:`trainer.search.search`. Metrics: hit@1, hit@5 and MRR over the top 100.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = ROOT / "trainer" / "data" / "sets" / "click_questions.jsonl"
VARIANTS = ("code without docstring", "+ docstring", "+ docstring + context")
DEPTH = 100


def click_functions():
    """(snippets with ids, the miner's docstring-free code per snippet) for every function of the installed click."""
    import hashlib

    import click

    from trainer.data.mining import parsed_files
    from trainer.search.snippets import file_snippets, with_ids

    snippets, stripped = [], []
    for rel, text, functions in parsed_files(Path(click.__file__).parent):
        snippets += file_snippets(rel, text, functions, hashlib.sha256(text.encode()).hexdigest())
        stripped += [fn.code for fn in functions]
    return with_ids(snippets), stripped


def variant_texts(snippets, stripped) -> dict[str, list[str]]:
    from trainer.search.snippets import document_text

    return {
        VARIANTS[0]: stripped,
        VARIANTS[1]: [s.code for s in snippets],
        VARIANTS[2]: [document_text(s) for s in snippets],
    }


def in_memory_index(snippets, texts, model, dim: int):
    """A :class:`SearchIndex` whose vectors and BM25 come from ``texts`` (one per snippet), not from the snippets."""
    from trainer.embedding_cache import cached_encode, model_fingerprint
    from trainer.retrieval import normalize_truncate
    from trainer.search.dense import DenseIndex
    from trainer.search.lexical import LexicalIndex
    from trainer.search.store import SearchIndex

    vectors = normalize_truncate(cached_encode(model, texts, "document")[0], dim).numpy()  # reruns encode nothing
    manifest = {"model": "bench", "model_dim": model.get_embedding_dimension(), "dim": dim, "precision": "float32",
                "model_fingerprint": model_fingerprint(model)}
    index = SearchIndex(Path("<memory>"), manifest, snippets, DenseIndex("float32", dim, vectors), {})
    index.lexical = LexicalIndex.build(texts)  # fills the cached property
    return index


def rank_metrics(ranked_keys: list[list[tuple[str, str]]], answers: list[tuple[str, str]]) -> dict[str, float]:
    """hit@1, hit@5 and MRR (0 past the list) in percent, from each question's ranked (path, name) keys."""
    ranks = [next((r for r, key in enumerate(keys, 1) if key == answer), None) for keys, answer in zip(ranked_keys, answers)]
    n = len(answers)
    return {
        "hit@1": 100 * sum(r == 1 for r in ranks) / n,
        "hit@5": 100 * sum(r is not None and r <= 5 for r in ranks) / n,
        "mrr": 100 * sum(1 / r for r in ranks if r is not None) / n,
    }


def score_model(spec: str, dim: int, variants=VARIANTS) -> dict:
    from trainer.models import load_model
    from trainer.search import MODES, search

    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    answers = [(q["path"], q["name"]) for q in questions]
    model = load_model(spec)
    snippets, stripped = click_functions()
    out = {}
    for variant, texts in variant_texts(snippets, stripped).items():
        if variant not in variants:
            continue
        index = in_memory_index(snippets, texts, model, dim)
        for mode in MODES:
            hits = search(index, [q["question"] for q in questions], model, k=DEPTH, mode=mode)
            out[f"{variant} | {mode}"] = rank_metrics([[(h.snippet.path, h.snippet.name) for h in row] for row in hits], answers)
    return {"questions": len(questions), "functions": len(snippets), "scores": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--variants", type=int, nargs="+", default=[0, 1, 2], help="document texts to compare (0 1 2)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = [VARIANTS[i] for i in args.variants]
    results = {spec: score_model(spec, args.dim, variants) for spec in args.models}
    first = next(iter(results.values()))
    print(f"{first['questions']} questions over {first['functions']} functions of click, dense at dim {args.dim}\n")
    print("| model | document text | mode | hit@1 | hit@5 | MRR |\n|---|---|---|---:|---:|---:|")
    for spec, result in results.items():
        for key, m in result["scores"].items():
            variant, mode = key.split(" | ")
            print(f"| {spec} | {variant} | {mode} | {m['hit@1']:.1f} | {m['hit@5']:.1f} | {m['mrr']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
