"""Encoding backends side by side: functions/s, peak RSS and NDCG@10 for torch fp32 / bf16 and OpenVINO fp32 / int8.

    python bench/index_backends.py                       # the default model, every backend, the sets below
    python bench/index_backends.py --model runs/x/final --computes bf16 openvino-int8 --json out.json
    python bench/index_backends.py --computes bf16 openvino-int8 --max-seq-length 256 128   # each at both limits

Each backend runs in its own process, so peak RSS is its own: the model loaded, every document of
the sets encoded as an index encodes it (functions as written, batches of 64, length-sorted), the
queries encoded, NDCG@10 at each dim. functions/s counts the documents' encoding alone; an export
(the first use of a backend) is made in a process before and timed apart, as it happens once per model.

The documents are the quality sets whose documents keep their docstrings (people's questions over
StaQC answers and click; networkx, scikit-learn and four small libraries as written), so the speed
is measured on the code an index holds and the quality on the questions people ask. OpenVINO needs
the ``openvino`` extra (see pyproject.toml for the versions it pins); a backend that is not installed
is reported as such. ONNX is not offered: see :mod:`trainer.models.backends`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.data.benchmarks import eval_sets  # noqa: E402
from trainer.evaluator import encode_corpus, evaluate  # noqa: E402
from trainer.models.backends import BACKENDS, load_encoder  # noqa: E402

COMPUTES = ("fp32", "bf16", "openvino", "openvino-int8")
SETS = ("real:staqc", "real:click", "written:networkx", "written:sklearn", "written:small-libs")


def measure(model_spec: str, compute: str, sets: list[str], dims: list[int], max_seq_length: int) -> dict:
    """One backend in this process: load, encode every set's documents (timed), score."""
    data = eval_sets(tuple(sets))
    start = time.perf_counter()
    model = load_encoder(model_spec, compute, max_seq_length=max_seq_length)
    load_s = time.perf_counter() - start
    docs, seconds, ndcg = 0, 0.0, {}
    for name, d in data.items():
        start = time.perf_counter()
        corpus = encode_corpus(model, d, show_progress=False, compute=compute)
        seconds += time.perf_counter() - start
        docs += len(d.corpus)
        metrics = evaluate(model, d, dims, show_progress=False, corpus=corpus, compute=compute)
        ndcg[name] = {str(dim): 100 * metrics[str(dim)]["ndcg@10"] for dim in dims}  # str: as JSON brings it back
    ndcg["mean"] = {str(dim): sum(ndcg[n][str(dim)] for n in data) / len(data) for dim in dims}
    return {"compute": compute, "load_s": load_s, "functions": docs, "encode_s": seconds,
            "functions_per_s": docs / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "ndcg@10": ndcg}


def _child(args, compute: str, length: int, export_only: bool = False) -> dict | str:
    cmd = [sys.executable, __file__, "--model", args.model, "--one", compute, "--sets", *args.sets,
           "--dims", *map(str, args.dims), "--max-seq-length", str(length)]
    if export_only:
        cmd.append("--export-only")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit {proc.returncode}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--computes", nargs="+", default=list(COMPUTES), choices=COMPUTES)
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 256])
    parser.add_argument("--max-seq-length", type=int, nargs="+", default=[256],
                        help="token limits of the documents; every compute runs at each (the first is the ratio's bf16)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        if args.export_only:
            start = time.perf_counter()
            load_encoder(args.model, args.one, max_seq_length=args.max_seq_length[0])
            print(json.dumps({"export_s": time.perf_counter() - start}))
        else:
            print(json.dumps(measure(args.model, args.one, args.sets, args.dims, args.max_seq_length[0])))
        return

    eval_sets(tuple(args.sets))  # built (and cached) once, before any timing
    rows = []
    for length in args.max_seq_length:
        for compute in args.computes:
            export = _child(args, compute, length, export_only=True) if compute in BACKENDS else {}
            row = export if isinstance(export, str) else _child(args, compute, length)
            if isinstance(row, str):
                print(f"{compute:14} {length:4} tokens  not measured: {row}", flush=True)
                rows.append({"compute": compute, "max_seq_length": length, "error": row})
                continue
            row.update(first_load_s=export.get("export_s"), max_seq_length=length)
            rows.append(row)
            print(f"{compute:14} {length:4} tokens {row['functions_per_s']:7.1f} functions/s  peak RSS {row['peak_rss_mb']:6.0f} MB  "
                  + "  ".join(f"NDCG@10@{d} {row['ndcg@10']['mean'][str(d)]:.2f}" for d in args.dims), flush=True)
    base = next((r for r in rows if r["compute"] == "bf16" and "error" not in r), None)  # at the first limit
    print("\n| compute | tokens | functions/s | vs bf16 | peak RSS (MB) | " + " | ".join(f"NDCG@10 @{d} (mean)" for d in args.dims) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(args.dims))
    for r in rows:
        if "error" in r:
            print(f"| {r['compute']} | {r['max_seq_length']} | not measured: {r['error'][:80]} |")
            continue
        ratio = f"{r['functions_per_s'] / base['functions_per_s']:.2f}x" if base else "-"
        print(f"| {r['compute']} | {r['max_seq_length']} | {r['functions_per_s']:.1f} | {ratio} | {r['peak_rss_mb']:.0f} | "
              + " | ".join(f"{r['ndcg@10']['mean'][str(d)]:.2f}" for d in args.dims) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "sets": args.sets, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
