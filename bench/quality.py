"""Score models on every kind of question codetune is judged by, at every Matryoshka dim, in one table.

    python bench/quality.py default runs/matryoshka-x/final [--dims 384 256 128 64] [--json out.json]
    python bench/quality.py runs/matryoshka-x/final@0.7     # WiSE-FT: 0.3 base + 0.7 tuned weights
    python bench/quality.py mpnet-base runs/mpnet-x/final@0.7 --base mpnet-base --dims 768 256 128 64
    python bench/quality.py mpnet-base runs/mpnet-x/final --sets ood:networkx ood:small-libs general

Sets (all built offline, none of them in any training row; what each measures:
:mod:`trainer.data.benchmarks`): ``real:staqc`` and ``real:click`` (people's questions over code as
written), ``in-domain``, ``ood:<project>`` (docstrings cut) and ``written:<project>`` (docstrings
kept), ``general`` and ``general-short``. Means per kind: ``real-mean``, ``ood-mean``, ``written-mean``.

Every model is encoded at the same ``--max-seq-length`` (256), so that the length it was trained
at does not change how much code it is shown here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.data.beir import BeirData  # noqa: E402
from trainer.data.benchmarks import SET_NAMES, eval_sets  # noqa: E402
from trainer.embedding_cache import model_fingerprint  # noqa: E402
from trainer.evaluator import evaluate  # noqa: E402
from trainer.fileio import atomic_write_json, cache_root  # noqa: E402
from trainer.models import load_model  # noqa: E402
from trainer.models.backends import load_encoder  # noqa: E402
from trainer.models.merge import interpolate, snapshot  # noqa: E402
from trainer.retrieval import ENCODER_COMPUTES  # noqa: E402


def score(model_spec: str, sets: dict[str, BeirData], dims: list[int], max_seq_length: int = 256,
          base_spec: str = "default", compute: str = "fp32") -> dict:
    """``{set: {dim: ndcg@10}}`` plus the means ``real-mean``, ``ood-mean`` and ``written-mean`` over each kind's sets.

    ``MODEL@ALPHA`` scores ``base + ALPHA * (MODEL - base)`` with ``base_spec`` as the base.
    ``compute``: fp32 (the default, comparable across machines), bf16 autocast, or an OpenVINO graph.
    """
    path, _, alpha = model_spec.partition("@")
    if alpha and compute != "fp32":
        raise SystemExit(f"{model_spec}: MODEL@ALPHA is merged in torch; score it with --compute fp32")
    model = load_encoder(path, compute, max_seq_length=max_seq_length)
    if alpha:
        # Into the tuned model, so that modules the base lacks (a pca_rotation Dense) are kept.
        interpolate(model, snapshot(load_model(base_spec, max_seq_length=max_seq_length)), float(alpha))
    out = {}
    for name, data in sets.items():
        out[name] = _cached_ndcg(model, data, dims, compute)
    for kind in ("real", "ood", "written"):
        group = [v for k, v in out.items() if k.startswith(f"{kind}:")]
        if group:
            out[f"{kind}-mean"] = {d: sum(s[d] for s in group) / len(group) for d in dims}
    return out


def _cached_ndcg(model, data: BeirData, dims: list[int], compute: str = "fp32") -> dict[int, float]:
    """NDCG@10 per dim, remembered by model weights, compute and set content (the base model is scored once)."""
    arithmetic = "" if compute == "fp32" else f"-{compute}"  # fp32 keeps the key it had before compute existed
    path = cache_root() / "bench-scores" / f"{model_fingerprint(model)}{arithmetic}-{data.fingerprint()}-{'-'.join(map(str, dims))}.json"
    if path.is_file():
        return {int(d): v for d, v in json.loads(path.read_text()).items()}
    metrics = evaluate(model, data, dims, show_progress=False, compute=compute)
    scores = {d: 100 * metrics[str(d)]["ndcg@10"] for d in dims}
    atomic_write_json(path, scores)
    return scores


def print_scores(results: dict[str, dict], dims: list[int]) -> None:
    names = list(next(iter(results.values())))
    header = f"{'model':40}{'set':20}" + "".join(f"{d:>8}" for d in dims)
    print(header)
    for model, scores in results.items():
        for name in names:
            print(f"{model[-40:]:40}{name:20}" + "".join(f"{scores[name][d]:8.2f}" for d in dims))


def main() -> None:
    parser = argparse.ArgumentParser(description="NDCG@10 of models on in-domain, out-of-domain and general code questions")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64])
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--json", help="write the scores here")
    parser.add_argument("--base", default="default", help="the base model that MODEL@ALPHA is merged with")
    parser.add_argument("--compute", default="fp32", choices=[c for c in ENCODER_COMPUTES if c != "auto"],
                        help="encoding: fp32 (default), bf16 autocast, or an OpenVINO graph (the openvino extra)")
    parser.add_argument("--sets", nargs="+", choices=SET_NAMES, default=list(SET_NAMES),
                        help="score these sets only (a 110M model takes ~20 min for all of them on 2 cores)")
    args = parser.parse_args()
    sets = eval_sets(tuple(args.sets))
    results = {m: score(m, sets, args.dims, args.max_seq_length, args.base, args.compute) for m in args.models}
    print_scores(results, args.dims)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
