"""torch.compile (inductor) against eager PyTorch on CPU, side by side: the training step and encoding.

    python bench/compile.py                                    # 3 warm-up + 20 timed steps, 512 documents
    python bench/compile.py --dynamic --json runs/compile.json # + torch.compile(dynamic=True), results kept
    python bench/compile.py --steps 3 --warmup 1 --batch-size 8 --max-seq-length 64 --documents 64  # smoke test

What is compiled: the SentenceTransformer's forward pass, in place (``model.compile()``, which
sentence-transformers documents for this). The training loop and ``encode`` both call the model,
so neither changes; the loss (a few small matmuls) and AdamW stay eager. Two compiled cases:

* ``compile``: torch's default (``dynamic=None``). The first call is compiled for its shapes; the
  first change of shape recompiles with symbolic sizes ("automatic dynamic shapes").
* ``compile dynamic`` (``--dynamic``): ``dynamic=True``, symbolic sizes from the first call.

Shapes do change: a batch is padded to its longest text, and the loop embeds a batch's documents
in ``train.length_buckets`` length-sorted slices, each padded to its own longest.

Training: the embedded default (all-MiniLM-L6-v2) set up as ``recipes/configs/matryoshka.yaml``
sets it up (attention dropout 0, so CPU attention runs fused; Matryoshka dims and weights;
symmetric InfoNCE; 4 length slices; AdamW, gradient clipping, the warm-up schedule), under bf16
autocast. The yaml's PCA rotation is left out: it needs a fit, and adds one 384x384 matmul. The
batches are the standard library's training pairs as ``Trainer.fit`` plans them (half of each
batch from a few files), the same batches for every case. A step is the loop's own
``Trainer._plain_batch`` (tokenize, forward, loss, backward), then clip, AdamW and scheduler, as
``fit`` takes it.

Encoding: ``trainer.retrieval.encode`` (the evaluator's path: length-sorted batches through
sentence-transformers' ``encode``, under ``torch.inference_mode``) with bf16 autocast, on the
first ``--documents`` functions of the held-out standard-library split.

Each case runs in its own process, so its peak memory is its own, with an empty inductor cache
(``TORCHINDUCTOR_CACHE_DIR``), so compile time is what a first run on a machine pays; later runs
there reuse the cache and pay less. CUDA is hidden: this is about CPUs. How to read the tables:

* compile s: torch's own count of seconds spent compiling (forward and backward graphs, every
  recompile); first s: wall time of the first step (training) or of the first pass over the
  documents (encoding), compile included.
* s/step: median wall time of the timed steps (after ``--warmup``); pairs/s: batch / s/step.
  functions/s: documents / median wall time of ``--repeats`` passes after the first.
* peak GB: the process's peak resident memory (the compiled cases' includes the compiler).
* graphs: graphs compiled; recompiles: of those, compiled because a guard (a shape, mostly) failed;
  late: graphs compiled during the timed steps or passes (0 means the median is steady state);
  breaks: graph breaks (each splits the model into separately compiled pieces).
* break-even: steps (training) or passes (encoding) before the compile time is paid back by the
  faster steps; "-" when compiled is not faster.
* numerics: the first batch's loss and gradient with dropout off (every side then computes the
  same function), eager and compiled, in fp32 and in bf16. Compiled fp32 vs eager fp32 shows
  whether compiling changes the arithmetic; eager bf16 vs eager fp32 is bf16's own rounding, the
  scale to read compiled bf16 vs eager bf16 against (inductor fuses ops and may round at other
  places). For encoding, the lowest cosine over the documents to eager bf16's embeddings.

Wall times: run it on an otherwise idle machine; ``--threads`` (default 2) sets torch's threads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import _row  # noqa: E402

CONFIG = ROOT / "recipes" / "configs" / "matryoshka.yaml"
MODES = {"eager": None, "compile": {}, "compile dynamic": {"dynamic": True}}
WIDTH = 22


def recipe_config(args):
    """matryoshka.yaml at this run's batch size and sequence length, bf16, nothing logged."""
    from trainer.config import load_config
    from trainer.session import FineTuneConfig

    overrides = [f"model.max_seq_length={args.max_seq_length}", f"train.batch_size={args.batch_size}",
                 "mixed_precision=bf16", "tracking.wandb=disabled"]
    return load_config(FineTuneConfig, ["--config", str(CONFIG), *overrides])


def prepare_inputs(args, work: Path) -> dict:
    """The training batches (rows, as ``fit`` plans them) and the documents to encode, for every case."""
    from trainer.data import load_training_data
    from trainer.data.batches import run_batches, with_negatives

    cfg = recipe_config(args)
    with contextlib.redirect_stdout(sys.stderr):  # data's notes stay off the tables
        data = load_training_data(cfg.data, work)
    planned, train_cfg, _ = with_negatives(data.train, cfg.train)
    plan = run_batches(planned, train_cfg, world=1)
    batches = [planned.take(next(plan)) for _ in range(args.warmup + args.steps)]
    corpus = data.eval_data
    documents = [corpus.document_text(i) for i in list(corpus.corpus)[: args.documents]]
    return {"batches": batches, "documents": documents, "held_out": len(corpus.corpus)}


# -- the cases, each in its own process ------------------------------------------------------


class Recompiles(logging.Handler):
    """Counts dynamo's "Recompiling function" records and keeps their guard failures (the why)."""

    def __init__(self):
        super().__init__()
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Recompiling function"):
            self.reasons.append(" ".join(text.split("\n")[2:]).strip()[:300])

    @classmethod
    def watch(cls) -> Recompiles:
        import torch

        torch._logging.set_logs(recompiles=True)  # dynamo logs each recompile (to stderr too: captured)
        handler = cls()
        logging.getLogger("torch._dynamo").addHandler(handler)
        return handler


def graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def dynamo_stats(recompiles: Recompiles) -> dict:
    """What torch counted while compiling (its internals: torch._dynamo.utils)."""
    from torch._dynamo.utils import calculate_time_spent, counters

    return {
        "compile_s": calculate_time_spent().get("total_wall_time", 0.0),
        "graphs": graphs(),
        "recompiles": len(recompiles.reasons),
        "recompile_reasons": recompiles.reasons[:10],
        "graph_breaks": sum(counters["graph_break"].values()),
    }


def peak_memory() -> dict:
    return {
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        # inductor may compile in worker processes; their peak is not in the process's own
        "workers_peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
    }


def build_trainer(args, rows: list[dict], work: Path):
    """The recipe's model, loss and Trainer. The Trainer is used for its step; the batches come from the parent."""
    from trainer.loop import Trainer
    from trainer.losses import MatryoshkaInfoNCE
    from trainer.models import load_model
    from trainer.models.memory import prepare_for_training
    from trainer.run import make_accelerator, matryoshka_dims

    cfg = recipe_config(args)
    acc = make_accelerator(cfg.mixed_precision, cfg.tracking, cfg.train.seed, args.threads)
    model = load_model(cfg.model, device=str(acc.device))
    prepare_for_training(model, cfg.model)
    loss_fn = MatryoshkaInfoNCE.from_config(cfg.loss, matryoshka_dims(cfg.loss, model))
    # max_steps: the warm-up schedule spans the steps run here, as it spans a run's.
    train_cfg = replace(cfg.train, max_steps=len(rows) // cfg.train.batch_size)
    return Trainer(model, rows, loss_fn, train_cfg, acc, work, tracker=None)


def train_step(trainer, queries: list[str], docs: list[str]) -> float:
    """One optimizer step as ``Trainer.fit`` takes it (one batch, no accumulation); returns the loss."""
    loss, _, _ = trainer._plain_batch(queries, docs, 1.0, sync=True)
    trainer.accelerator.clip_grad_norm_(trainer.params, trainer.cfg.max_grad_norm)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return loss.item()  # fit reads it too: the step's work is done when this returns


def train_case(args, inputs: dict, mode: str, work: Path) -> dict:
    from trainer.data.batches import batch_texts

    recompiles = Recompiles.watch()
    trainer = build_trainer(args, [r for batch in inputs["batches"] for r in batch], work)
    if MODES[mode] is not None:
        trainer.module.compile(**MODES[mode])
    trainer.model.train()
    times, losses, compiled = [], [], []
    for rows in inputs["batches"]:
        queries, docs = batch_texts(rows, trainer.cfg.hard_negatives)  # (b,), (b * (1 + h),)
        t0 = time.perf_counter()
        losses.append(train_step(trainer, queries, docs))
        times.append(time.perf_counter() - t0)
        compiled.append(graphs())
    median = statistics.median(times[args.warmup :])
    return {
        "first_s": times[0], "s_per_step": median, "pairs_per_s": args.batch_size / median,
        "late": compiled[-1] - compiled[args.warmup - 1], "step_s": times, "losses": losses,
        # dropout differs between the sides (inductor draws its own random numbers): losses agree on average only
        "mean_loss": statistics.fmean(losses[args.warmup :]),
        **dynamo_stats(recompiles), **peak_memory(),
    }


def encode_case(args, inputs: dict, mode: str, work: Path) -> dict:
    import torch

    from trainer.hardware import use_cpu_threads
    from trainer.models import load_model
    from trainer.retrieval import encode

    recompiles = Recompiles.watch()
    use_cpu_threads(args.threads)
    model = load_model(recipe_config(args).model, device="cpu")
    if MODES[mode] is not None:
        model.compile(**MODES[mode])
    docs = inputs["documents"]
    t0 = time.perf_counter()
    encode(model, docs, "document", args.encode_batch_size, compute="bf16")
    first = time.perf_counter() - t0
    after_first = graphs()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        emb = encode(model, docs, "document", args.encode_batch_size, compute="bf16")  # (N, D)
        times.append(time.perf_counter() - t0)
    result = {
        "first_s": first, "s_per_pass": statistics.median(times), "functions_per_s": len(docs) / statistics.median(times),
        "late": graphs() - after_first, "pass_s": times, **dynamo_stats(recompiles), **peak_memory(),
    }
    torch.save(emb, work / f"encode-{mode}.pt")
    if MODES[mode] is None:  # the reference the numerics compare bf16 against, after the measurement
        torch.save(encode(model, docs, "document", args.encode_batch_size, compute="fp32"), work / "encode-fp32.pt")
    return result


def numerics_case(args, inputs: dict, mode: str, work: Path) -> dict:
    """Loss and gradient on the first batch, dropout off: eager and compiled, each in fp32 and bf16.

    Compiled fp32 against eager fp32 tells whether compiling changes the arithmetic at all;
    compiled bf16 against eager bf16, next to eager bf16 against fp32, how its rounding compares.
    """
    import torch
    from accelerate.utils import AutocastKwargs

    from trainer.data.batches import batch_texts

    trainer = build_trainer(args, inputs["batches"][0], work)
    trainer.model.eval()  # no dropout: every side computes the same function
    queries, docs = batch_texts(inputs["batches"][0], trainer.cfg.hard_negatives)
    acc, pair = trainer.accelerator, trainer.model
    prepared = pair.forward

    def loss_and_grad(fp32: bool) -> tuple[float, torch.Tensor]:
        # fp32: both of the loop's autocasts off, the one in Trainer._embed (the accelerator's
        # handler) and the one accelerate's prepare() wrapped around the forward (it keeps the original).
        acc.autocast_handler = AutocastKwargs(enabled=False) if fp32 else None
        pair.forward = pair._original_forward if fp32 else prepared
        loss, _, _ = trainer._plain_batch(queries, docs, 1.0, sync=True)
        # float64: a cosine over 22M coordinates summed in fp32 is off in the third decimal
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in trainer.params]).double()
        trainer.optimizer.zero_grad(set_to_none=True)
        acc.autocast_handler, pair.forward = None, prepared  # as the loop runs it
        return loss.item(), grad

    sides = {"eager fp32": loss_and_grad(fp32=True), "eager bf16": loss_and_grad(fp32=False)}
    for name in ["compile", *(["compile dynamic"] if args.dynamic else [])]:
        torch._dynamo.reset()  # each mode compiles from scratch
        trainer.module.compile(**MODES[name])
        sides[f"{name} bf16"] = loss_and_grad(fp32=False)
        if name == "compile":
            sides["compile fp32"] = loss_and_grad(fp32=True)
    out = {}
    for name, (loss, grad) in sides.items():
        out[name] = {"loss": loss}
        for ref in ("eager fp32", "eager bf16"):
            ref_loss, ref_grad = sides[ref]
            out[name][f"abs_diff_{ref[-4:]}"] = abs(loss - ref_loss)
            out[name][f"grad_cosine_{ref[-4:]}"] = torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0).item()
    return out


CASES = {"train": train_case, "encode": encode_case, "numerics": numerics_case}


def child_main(args) -> None:
    work = Path(args.work)
    inputs = json.loads((work / "inputs.json").read_text())
    print("RESULT " + json.dumps(CASES[args.child](args, inputs, args.mode, work)))


# -- the parent: launch, compare, print -------------------------------------------------------


def launch(case: str, mode: str, work: Path) -> dict:
    """One case in a fresh process with an empty inductor cache; its result, or its error's last lines."""
    cmd = [sys.executable, __file__, "--child", case, "--mode", mode, "--work", str(work), *sys.argv[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": "",
           "TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{case}-{mode.replace(' ', '-')}")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"error": proc.stderr.strip()[-2000:] or f"exit status {proc.returncode}"}
    result = json.loads(line[len("RESULT "):])
    print(f"  {case}, {mode}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return result


def embedding_cosines(work: Path, modes: list[str]) -> dict:
    """Per side, the lowest cosine over the documents between its embeddings and eager bf16's."""
    import torch
    import torch.nn.functional as F

    ref_path = work / "encode-eager.pt"
    if not ref_path.is_file():
        return {}
    ref = torch.load(ref_path)
    out = {}
    for name in ["fp32", *modes[1:]]:
        path = work / f"encode-{name}.pt"
        if path.is_file():
            out["eager fp32" if name == "fp32" else f"{name} bf16"] = F.cosine_similarity(torch.load(path), ref, dim=-1).min().item()
    return out


def break_even(compile_s: float, eager_s: float, compiled_s: float) -> str:
    """Steps (passes) before the time a compile took is paid back by faster ones."""
    return f"{compile_s / (eager_s - compiled_s):.0f}" if compiled_s < eager_s else "-"


def print_part(title: str, results: dict, time_key: str, rate_key: str, rate_name: str) -> None:
    columns = ["compile s", "first s", time_key.replace("s_per_", "s/"), rate_name, "peak GB", "graphs",
               "recompiles", "late", "breaks", "break-even"]
    print(title)
    print(_row("", columns, WIDTH))
    eager = results.get("eager", {})
    for mode, r in results.items():
        if "error" in r:
            print(f"{mode:{WIDTH}}failed: {r['error'].splitlines()[-1]}")
            continue
        even = break_even(r["compile_s"], eager[time_key], r[time_key]) if mode != "eager" and "error" not in eager else ""
        print(_row(mode, [f"{r['compile_s']:.1f}", f"{r['first_s']:.2f}", f"{r[time_key]:.3f}", f"{r[rate_key]:.2f}",
                          f"{r['peak_rss_gb']:.2f}", str(r["graphs"]), str(r["recompiles"]), str(r["late"]),
                          str(r["graph_breaks"]), even], WIDTH))
        if mode != "eager" and "error" not in eager:
            print(_row("  vs eager", ["", "", f"{r[time_key] / eager[time_key]:.2f}x", f"{r[rate_key] / eager[rate_key]:.2f}x",
                                      f"{r['peak_rss_gb'] / eager['peak_rss_gb']:.2f}x"], WIDTH))


def report(args, inputs: dict, results: dict) -> None:
    print(f"all-MiniLM-L6-v2 (default), bf16 autocast, {args.threads} threads, inductor cache empty per case")
    print()
    print_part(f"training step: batch {args.batch_size}, up to {args.max_seq_length} tokens, stdlib pairs as fit() "
               f"plans them, {args.warmup} warm-up + {args.steps} timed steps", results["train"], "s_per_step", "pairs_per_s", "pairs/s")
    train = {m: r for m, r in results["train"].items() if "error" not in r}
    if train:
        print("  mean loss of the timed steps (dropout differs): "
              + ", ".join(f"{m} {r['mean_loss']:.4f}" for m, r in train.items()))
    print()
    print_part(f"encoding: the first {len(inputs['documents'])} of the held-out split's {inputs['held_out']} functions, "
               f"batch {args.encode_batch_size}, first pass + median of {args.repeats}", results["encode"],
               "s_per_pass", "functions_per_s", "functions/s")
    print()
    numerics = results["numerics"]
    print("numerics: the first training batch, dropout off: loss, its |diff| and the gradient's cosine to each eager side")
    if "error" in numerics:
        print(f"  failed: {numerics['error'].splitlines()[-1]}")
    else:
        print(_row("", ["loss", "|diff| fp32", "|diff| bf16", "cos fp32", "cos bf16"], WIDTH))
        for name, r in numerics.items():
            print(_row(name, [f"{r['loss']:.5f}", f"{r['abs_diff_fp32']:.2e}", f"{r['abs_diff_bf16']:.2e}",
                              f"{r['grad_cosine_fp32']:.6f}", f"{r['grad_cosine_bf16']:.6f}"], WIDTH))
    cosines = results.get("embedding_min_cosine", {})
    if cosines:
        print(f"encoding, lowest cosine to eager bf16 over the {len(inputs['documents'])} documents: "
              + ", ".join(f"{name} {c:.6f}" for name, c in cosines.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description="torch.compile vs eager on CPU: training step and encoding")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="training steps left out of s/step (compiles happen here)")
    parser.add_argument("--batch-size", type=int, default=32, help="training pairs per step")
    parser.add_argument("--max-seq-length", type=int, default=256, help="tokens (model.max_seq_length)")
    parser.add_argument("--documents", type=int, default=512, help="functions to encode")
    parser.add_argument("--encode-batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed encoding passes, after the first")
    parser.add_argument("--dynamic", action="store_true", help="also torch.compile(dynamic=True)")
    parser.add_argument("--threads", type=int, default=2, help="torch's CPU threads in every case")
    parser.add_argument("--json", help="write every number (per-step times too) to this file")
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1")
    if args.child:
        child_main(args)
        return

    modes = ["eager", "compile", *(["compile dynamic"] if args.dynamic else [])]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = prepare_inputs(args, work)
        (work / "inputs.json").write_text(json.dumps(inputs))
        results = {part: {mode: launch(part, mode, work) for mode in modes} for part in ("train", "encode")}
        results["numerics"] = launch("numerics", "compile", work)
        results["embedding_min_cosine"] = embedding_cosines(work, modes)
    report(args, inputs, results)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("child", "mode", "work", "json")}
        Path(args.json).write_text(json.dumps({"settings": settings, **results}, indent=1))


if __name__ == "__main__":
    main()
