"""all-MiniLM-L6-v2 (``default``) against all-mpnet-base-v2 (``mpnet-base``), side by side on the same data.

    python bench/models.py                                 # pairs/s and peak memory: fp32/bf16 x GradCache off/on
    python bench/models.py --batch-size 32 --chunk 8 --steps 3 --threads 1 --max-memory-gb 12  # docs/models.md's numbers
    python bench/models.py --full --out runs/models        # each model's own config, whole runs, NDCG@10 before/after

Step mode: each case is a short run of ``recipes/matryoshka.py`` (``train.max_steps``, nothing held
out, no checkpoints) in its own process, so its peak memory is its own: resident memory on CPU,
peak allocated CUDA memory on a GPU. Both models see the same batches of standard-library pairs;
``train.group_by_length`` is off, so nearly every batch is padded to ``--seq-len`` (the memory a
config must fit, and the slowest steps). pairs/s comes from the run's per-step log; pairs/CPU-s
divides by the CPU seconds of each step's forward and backward (the optimizer step left out), which
stay comparable when other jobs share the cores; both leave out the first step (warm-up).
``--max-memory-gb`` caps each case's heap (RLIMIT_DATA): a case that needs more reports "out of
memory" instead of pushing the machine into swap or the OOM killer.

Full mode: ``recipes/configs/matryoshka.yaml`` for MiniLM and ``recipes/configs/mpnet.yaml``
(each with any ``--overrides``), evaluated before and after on the held-out stdlib split; prints
pairs/s, peak memory, wall time and NDCG@10 at every dim. With ``--out DIR`` the run folders stay
in ``DIR/MiniLM`` and ``DIR/mpnet``, and ``bench/quality.py DIR/mpnet/run/final --dims 768 512 256 128 64``
scores a tuned model on the out-of-domain and general sets.
"""

from __future__ import annotations

import argparse
import importlib
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

MODELS = {
    "MiniLM": {"name": "default", "dims": [384, 256, 128, 64], "config": "matryoshka.yaml"},
    "mpnet": {"name": "mpnet-base", "dims": [768, 512, 256, 128, 64], "config": "mpnet.yaml"},
}


def step_overrides(args, model: str, precision: str, chunk: int) -> list[str]:
    """The same short run for either model: only the name and its Matryoshka dims differ."""
    spec = MODELS[model]
    return [
        f"model.name={spec['name']}", f"loss.matryoshka_dims={spec['dims']}", f"model.max_seq_length={args.seq_len}",
        f"train.batch_size={args.batch_size}", f"train.grad_cache_chunk={chunk}", f"mixed_precision={precision}",
        f"train.max_steps={args.steps}", "train.group_by_length=false", "data.test_fraction=0",
        "train.checkpoint_every=0", "train.log_every=1", "tracking.wandb=disabled",
        *([f"cpu_threads={args.threads}"] if args.threads else []),
    ]


def child(argv: list[str], out: Path, max_memory_gb: float, recipe: str = "matryoshka") -> dict:
    """Run ``recipes/<recipe>.py`` with ``argv`` in this process; its throughput, peak memory and scores."""
    if max_memory_gb:
        limit = int(max_memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import torch

    sys.path.insert(0, str(ROOT / "recipes"))
    main = importlib.import_module(recipe).main

    from trainer.loop import Trainer

    # CPU seconds of each step's forward and backward: unlike wall time, they barely change when
    # other jobs share the cores. (pairs, seconds) per step.
    cpu: list[tuple[int, float]] = []

    def timed(step_fn):
        def step(self, queries, *args, **kwargs):
            start = time.process_time()
            out = step_fn(self, queries, *args, **kwargs)
            cpu.append((len(queries), time.process_time() - start))
            return out

        return step

    Trainer._plain_batch, Trainer._cached_batch = timed(Trainer._plain_batch), timed(Trainer._cached_batch)
    run = out / "run"
    t0 = time.perf_counter()
    try:
        status = main([*argv, f"output_dir={run}"])
    except (RuntimeError, MemoryError) as err:
        if isinstance(err, MemoryError) or "can't allocate memory" in str(err) or "out of memory" in str(err).lower():
            return {"oom": True}
        raise
    result = {"status": status, "wall_seconds": time.perf_counter() - t0}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rates = [r["pairs_per_s"] for r in log if "pairs_per_s" in r][1:] or [r["pairs_per_s"] for r in log if "pairs_per_s" in r]
    result["pairs_per_s"] = len(rates) / sum(1 / r for r in rates)  # pairs over seconds, not a mean of rates
    measured = cpu[1:] or cpu  # the first step pays for kernel selection and first allocations
    result["pairs_per_cpu_s"] = sum(n for n, _ in measured) / sum(t for _, t in measured)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if torch.cuda.is_available():
        result["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if (run / "eval.json").is_file():
        result["eval"] = json.loads((run / "eval.json").read_text())
    return result


def launch(argv: list[str], max_memory_gb: float, keep: Path | None = None, recipe: str = "matryoshka") -> dict:
    """:func:`child` in a fresh process (its own peak memory), its run folder in ``keep`` or a temporary one.

    Exits with the child's stderr if it failed.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--child", str(out), "--recipe", recipe, "--max-memory-gb", str(max_memory_gb),
               "--", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def _peak(r: dict) -> float:
    return r.get("peak_cuda_gb", r["peak_rss_gb"])


COLUMNS = (("pairs/s", lambda r: r["pairs_per_s"]), ("pairs/CPU-s", lambda r: r["pairs_per_cpu_s"]), ("peak GB", _peak))


def _row(label: str, values: list[str], width: int = 26) -> str:
    return f"{label:{width}}" + "".join(f"{v:>13}" for v in values)


def _cells(r: dict, max_memory_gb: float) -> list[str]:
    """One case's COLUMNS, or "out of memory" under the ``--max-memory-gb`` cap."""
    if r.get("oom"):
        return ["-", "-", f"OOM >{max_memory_gb:g}" if max_memory_gb else "OOM"]
    return [f"{get(r):.2f}" for _, get in COLUMNS]


def step_mode(args) -> None:
    cases = [(p, c) for p in args.precisions for c in (0, args.chunk)]
    results = {}
    for precision, chunk in cases:
        for model in MODELS:  # alternate the models, so drift in machine load hits both alike
            results[model, precision, chunk] = r = launch(step_overrides(args, model, precision, chunk), args.max_memory_gb)
            print(f"  {model} {precision} chunk {chunk}: {json.dumps(r)}", file=sys.stderr)
    memory = "CUDA memory allocated" if any("peak_cuda_gb" in r for r in results.values()) else "resident memory"
    print(f"stdlib pairs, batch {args.batch_size}, sequence {args.seq_len} (padded), {args.steps} steps; "
          f"first step left out; peak GB: {memory}")
    print(_row("precision, GradCache", [name for name, _ in COLUMNS]))
    for precision, chunk in cases:
        a, b = results["MiniLM", precision, chunk], results["mpnet", precision, chunk]
        for model, r in (("MiniLM", a), ("mpnet", b)):
            print(_row(f"{precision}, {f'chunk {chunk}' if chunk else 'off'}, {model}", _cells(r, args.max_memory_gb)))
        if not (a.get("oom") or b.get("oom")):
            print(_row("  mpnet / MiniLM", [f"{get(b) / get(a):.2f}x" for _, get in COLUMNS]))


def full_mode(args) -> None:
    results = {}
    for model, spec in MODELS.items():
        argv = ["--config", str(ROOT / "recipes" / "configs" / spec["config"]), "tracking.wandb=disabled",
                "train.checkpoint_every=0", "train.log_every=1", *args.overrides]
        results[model] = launch(argv, args.max_memory_gb, Path(args.out) / model if args.out else None)
    print(f"{'model':8}{'wall min':>10}{'pairs/s':>10}{'peak GB':>10}   NDCG@10 before -> after, per dim")
    for model, r in results.items():
        if r.get("oom"):
            print(f"{model:8}{'-':>10}{'-':>10}{f'OOM >{args.max_memory_gb:g}':>10}")
            continue
        before, after = r["eval"]["before"]["metrics"], r["eval"]["after"]["metrics"]
        dims = "  ".join(f"{d}: {100 * before[d]['ndcg@10']:.2f} -> {100 * after[d]['ndcg@10']:.2f}" for d in after)
        print(f"{model:8}{r['wall_seconds'] / 60:10.1f}{r['pairs_per_s']:10.2f}{_peak(r):10.2f}   {dims}")


def main() -> None:
    parser = argparse.ArgumentParser(description="MiniLM vs mpnet: training pairs/s, peak memory, NDCG@10")
    parser.add_argument("--steps", type=int, default=6, help="step mode: steps per case (the first is left out)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=4, help="the GradCache chunk of the 'on' cases")
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"], help="mixed_precision values (no = fp32)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (1: CPU seconds stay honest "
                        "when other jobs share the cores: no thread spins waiting for a descheduled peer); 0: the recipe's")
    parser.add_argument("--max-memory-gb", type=float, default=0, help="cap each case's heap; 0: no cap")
    parser.add_argument("--full", action="store_true", help="whole runs with each model's own config")
    parser.add_argument("--overrides", nargs="*", default=[], help="full mode: key=value for both runs")
    parser.add_argument("--out", help="full mode: keep the run folders here (DIR/MiniLM/run, DIR/mpnet/run)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="matryoshka", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        print("RESULT " + json.dumps(child([a for a in rest if a != "--"], Path(args.child), args.max_memory_gb, args.recipe)))
    elif args.full:
        full_mode(args)
    else:
        step_mode(args)


if __name__ == "__main__":
    main()
