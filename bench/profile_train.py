"""Where a training step's time goes: the Matryoshka recipe's loop, split into its parts.

    python bench/profile_train.py                          # the default config, 40 steps
    python bench/profile_train.py --steps 60 train.grad_cache_chunk=8
    python bench/profile_train.py --ops 15                 # + torch.profiler's top operators over 5 steps

Runs ``recipes/matryoshka.py`` in this process for ``--steps`` steps (the config and ``key=value``
overrides as the recipe takes them; evaluation questions and tracking off) with each part of the
step timed: reading the batch, tokenizing, the encoder's forward (queries and length slices), the
loss, backward, gradient clipping and the optimizer. The first ``--warmup`` steps are left out of
the means (allocator and oneDNN warm-up). ``--ops N`` adds torch.profiler's N most expensive
operators (self CPU time) over the last 5 steps (left out of the means), to see what the forward and backward
spend their time in. Nothing is asserted: numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.optimizer import AcceleratedOptimizer  # noqa: E402

import trainer.loop as loop  # noqa: E402
from trainer.losses import MatryoshkaInfoNCE  # noqa: E402

PARTS = ("data", "tokenize", "forward", "loss", "backward", "clip", "optimizer")


class StepClock:
    """Seconds per part of each training step, from patches on the functions the loop calls."""

    def __init__(self, warmup: int, steps: int, ops: int):
        self.warmup, self.ops = warmup, ops
        self.total = steps
        self.profiled_from = steps - 4 if ops else steps + 1  # the last 5 steps, left out of the means
        self.step = 0
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self.step_started = None
        self.profiler = None
        self.peak_rss_gb = float("nan")

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    @contextmanager
    def part(self, name: str):
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.current[name] += time.perf_counter() - t0

    def wrap(self, owner, attr: str, name: str, exclude: tuple[str, ...] = ()) -> None:
        """Time ``owner.attr`` as ``name``; parts timed inside it (``exclude``) are subtracted."""
        original = getattr(owner, attr)
        clock = self

        def timed(*args, **kwargs):
            inner = sum(clock.current[e] for e in exclude)
            with clock.part(name):
                out = original(*args, **kwargs)
            clock.current[name] -= sum(clock.current[e] for e in exclude) - inner
            return out

        setattr(owner, attr, timed)

    def end_step(self) -> None:
        """Called where the loop advances its progress bar: once per optimizer step."""
        now = time.perf_counter()
        self.step += 1  # the step that just ended
        if self.step_started is not None and self.warmup < self.step < self.profiled_from:
            self.steps.append({**self.current, "step": now - self.step_started})
        if self.step == self.total:
            self.peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
            if self.profiler is not None:
                self.profiler.__exit__(None, None, None)
        if self.step + 1 == self.profiled_from:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.__enter__()
        self.current = defaultdict(float)
        self.step_started = time.perf_counter()

    def print_ops(self) -> None:
        """torch.profiler's most expensive operators over the last steps (``--ops``)."""
        if self.profiler is not None:
            print(self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=self.ops))

    def summary(self) -> dict:
        """Mean seconds per step of each part after the warm-up, and the rest of the step as ``other``."""
        kept = self.steps
        if not kept:
            raise SystemExit(f"--steps must exceed --warmup ({self.warmup}), and by 5 more with --ops")
        mean = {k: sum(s.get(k, 0.0) for s in kept) / len(kept) for k in (*PARTS, "step")}
        mean["other"] = mean["step"] - sum(mean[p] for p in PARTS)
        return {"steps": len(kept), "seconds_per_step": mean, "peak_rss_gb_after_training": self.peak_rss_gb}


def load_recipe():
    spec = importlib.util.spec_from_file_location("matryoshka_recipe", ROOT / "recipes" / "matryoshka.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the means")
    parser.add_argument("--ops", type=int, default=0, help="print torch.profiler's N most expensive operators")
    parser.add_argument("--json", type=Path, help="write the means here")
    parser.add_argument("overrides", nargs="*", help="the recipe's key=value overrides (or --config PATH)")
    args = parser.parse_args()

    clock = StepClock(args.warmup, args.steps, args.ops)
    clock.wrap(loop, "batch_texts", "data")
    clock.wrap(loop, "tokenize", "tokenize")
    clock.wrap(loop.Trainer, "_embed", "forward", exclude=("tokenize",))
    clock.wrap(MatryoshkaInfoNCE, "__call__", "loss")
    clock.wrap(Accelerator, "backward", "backward")
    clock.wrap(Accelerator, "clip_grad_norm_", "clip")
    clock.wrap(AcceleratedOptimizer, "step", "optimizer")
    advance = loop.Tracker.advance

    def advanced(self, *a, **k):
        clock.end_step()
        return advance(self, *a, **k)

    loop.Tracker.advance = advanced

    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            f"output_dir={tmp}/run",
            f"train.max_steps={args.steps}",
            "train.checkpoint_every=0",
            "eval.questions=[]",
            "tracking.wandb=disabled",
            *args.overrides,
        ]
        t0 = time.perf_counter()
        load_recipe().main(argv)
        wall = time.perf_counter() - t0
        clock.print_ops()
        timing = json.loads((Path(tmp) / "run" / "timing.json").read_text())["seconds"]

    result = clock.summary()
    result["run_phases_s"] = timing
    result["run_wall_s"] = wall
    step = result["seconds_per_step"]["step"]
    print(f"\n{result['steps']} steps after {args.warmup} warm-up ones: {step:.3f} s/step")
    for name in (*PARTS, "other"):
        s = result["seconds_per_step"][name]
        print(f"  {name:<10} {s:7.3f} s  {100 * s / step:5.1f} %")
    print(f"peak resident memory up to the last step: {result['peak_rss_gb_after_training']:.2f} GB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
