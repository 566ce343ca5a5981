"""Data at scale: mine every installed distribution (``pkg:*``), then run the post-split steps at 10k and 100k rows.

    OMP_NUM_THREADS=1 python bench/data_scale.py                       # pkg:* less the bench's out-of-domain projects
    python bench/data_scale.py --exclude none --scales 10000          # everything installed; one scale
    python bench/data_scale.py --processes 1 2 --scales               # + mining the stdlib by 1 and by 2 processes
    python bench/data_scale.py --skip-pkg --scales --train-scales 10000 1000000 --train-rows arrow list  # training side

Step 1 is what ``data.source: pkg:*`` costs a run: reading, mining, the dedup across all
projects, the split and decontamination against the held-out files (``read_training_data``);
it prints files, pairs, files/s, pairs/s and the process's peak RSS.

With ``--processes``, step 0 mines ``--mine`` (default ``stdlib``) with ``python -m trainer.data
mine`` under ``accelerate launch`` once per process count, and prints the miner's own files/s
(launch and imports left out) and whether the rows equal the first count's.

Step 2 times the steps that grow with the rows (cross-source dedup, decontamination against the
held-out set, a mix at α = 0.5) on the mined rows replicated to each ``--scales`` size. Each
replica gets one extra statement, so it is a near duplicate: every row takes the slow path
(MinHash LSH lookup and exact Jaccard), an upper bound on the per-row cost. Wall and CPU seconds
are both printed: on a shared machine wall time measures the neighbours too.

Step 3 (``--train-scales``) is the training side: the standard library's rows, expanded as the
shipped matryoshka config expands them (query forms), replicated to each size (each replica's code
and paths distinct) and saved as Arrow; then, in a fresh process per size and per way of holding
the rows (``--train-rows``), a tiny random BERT is loaded and the rows are planned
(``check_batches``, the ``Trainer``'s plan, with the shipped ``train`` settings: batches by file)
and trained on for 3 steps. It prints the peak RSS above the model (the process's RSS once the
model is loaded), and apart the peak of its anonymous memory and of its file-backed pages (the
memory-mapped Arrow, paged in from the page cache, which a node's processes share and the kernel
can drop). ``arrow``: the rows memory-mapped, as a run holds them; ``list``: a list of dicts beside
an in-memory dataset, as ``Session.run`` held them before they were streamed (planned by today's code
here; this script copied into a checkout of d4d535f measures that code's plan too).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_scale import peak_rss_mb, timed  # noqa: E402  (bench/ is this script's folder, on sys.path)

# The out-of-domain projects of bench/quality.py, and pip (which vendors rich and requests).
OOD = ["networkx", "scikit-learn", "click", "rich", "jinja2", "requests", "pip"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exclude", nargs="*", default=OOD, help="projects left out ('none': none)")
    parser.add_argument("--scales", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--processes", nargs="*", type=int, default=[], help="step 0: mine with these process counts")
    parser.add_argument("--mine", default="stdlib", help="what step 0 mines (a data.source entry)")
    parser.add_argument("--skip-pkg", action="store_true", help="leave out step 1 (pkg:* through read_training_data)")
    parser.add_argument("--train-scales", nargs="*", type=int, default=[], help="step 3: the training side at these sizes")
    parser.add_argument("--train-rows", nargs="*", default=["arrow"], choices=["arrow", "list"],
                        help="step 3: how the rows are held (arrow: memory-mapped; list: dicts, as before)")
    args = parser.parse_args()
    exclude = [] if args.exclude == ["none"] else args.exclude
    if args.processes:
        mining_by_processes(args.mine, args.processes)
    if args.train_scales:
        training_side(args.train_scales, args.train_rows)
    if args.skip_pkg:
        return

    from trainer.data import DataConfig, read_training_data
    from trainer.data.assemble import dedup_across
    from trainer.data.decontaminate import decontaminate
    from trainer.data.mixing import mix_sources

    config = DataConfig(source="pkg:*", exclude_projects=exclude)
    with tempfile.TemporaryDirectory() as work:
        data, wall, cpu = timed(lambda: read_training_data(config, work))
    mix = data.report["mix"]["rows_before"]
    files = data.report["mining"]["files"]
    held = len(data.eval_data.queries) if data.eval_data else 0
    print(f"pkg:* less {', '.join(exclude) or 'nothing'}: {len(mix)} projects, {len(data.train):,} training pairs "
          f"(+{held:,} held out) from {files:,} files")
    print(f"  {wall:.0f} s wall, {cpu:.0f} s CPU; {files / wall:.0f} files/s, {(len(data.train) + held) / wall:.0f} pairs/s; "
          f"peak RSS {peak_rss_mb():.0f} MB")
    print(f"  dedup: {data.report['dedup'] and sum(sum(c.values()) for c in data.report['dedup'].values()):,} dropped; "
          f"decontamination: {({k: data.report.get('decontamination', {}).get(k) for k in ('query', 'document', 'near_document')})}")
    top = sorted(mix.items(), key=lambda kv: -kv[1])[:5]
    print("  largest projects: " + ", ".join(f"{name} {n:,}" for name, n in top))

    import datasets

    columns = {c: data.train[c] for c in ("query", "positive", "name")}
    for scale in args.scales:
        copies = -(-scale // len(data.train))
        parts = []
        for k in range(copies):
            replica = {**columns, "positive": [f"{code}\n    _replica = {k}" for code in columns["positive"]]}
            parts.append((f"copy{k}", datasets.Dataset.from_dict(replica)))
        rows_in = sum(len(p) for _, p in parts)

        def steps(parts=parts):
            kept = dedup_across(parts, 0.85, {})
            kept, _ = decontaminate(kept, [data.eval_data] if data.eval_data else [])
            return mix_sources(kept, 0.5, seed=0)

        _, wall, cpu = timed(steps)
        print(f"{rows_in:,} rows: dedup + decontaminate + mix {wall:.1f} s wall, {cpu:.1f} s CPU, "
              f"{rows_in / wall:,.0f} rows/s; peak RSS {peak_rss_mb():.0f} MB")


def training_side(scales: list[int], holds: list[str]) -> None:
    """Step 3: peak memory of planning and 3 training steps on the rows replicated to each size."""
    import datasets

    from recipes.matryoshka import config
    from tests.conftest import make_tiny_bert
    from trainer.data import expand_rows, read_training_data

    datasets.disable_progress_bars()
    data_cfg = replace(config([]).data, decontaminate=[])  # the shipped data settings; the bench sets do not matter here
    with tempfile.TemporaryDirectory() as work:
        base = expand_rows(read_training_data(data_cfg, work).train, data_cfg, None)
        model = make_tiny_bert(Path(work) / "tiny-bert")
        spawn = multiprocessing.get_context("spawn")  # a fresh process: its peak RSS is this measurement's alone
        for scale in scales:
            copies = -(-scale // len(base))
            replicas = [base.map(lambda row, k=k: {"positive": f"{row['positive']}\n    _replica = {k}",
                                                   "path": f"copy{k}/{row['path']}"}) for k in range(copies)]
            folder = Path(work) / f"rows-{scale}"
            datasets.concatenate_datasets(replicas).select(range(scale)).save_to_disk(str(folder))
            del replicas
            size = sum(f.stat().st_size for f in folder.glob("*.arrow")) / 2**20
            seen = {}
            for hold in holds:
                with spawn.Pool(1) as pool:
                    m = seen[hold] = pool.apply(train_few_steps, (str(folder), hold, str(model)))
                print(f"{scale:,} rows ({size:,.0f} MB of Arrow), held as {hold}: peak RSS {m['peak']:,.0f} MB above the model "
                      f"(anonymous {m['anon']:,.0f} MB, file-backed {m['file']:,.0f} MB); plan {m['plan_s']:.1f} s, "
                      f"3 steps {m['steps_s']:.1f} s")
            if len(seen) == 2:
                arrow, rows = seen["arrow"], seen["list"]
                print(f"  arrow / list: {arrow['peak'] / rows['peak']:.2f}x peak, {arrow['anon'] / rows['anon']:.2f}x anonymous")
            shutil.rmtree(folder)


def train_few_steps(folder: str, hold: str, model_dir: str) -> dict:
    """Load the model, then hold the rows at ``folder`` as ``hold`` says, plan them and train 3 steps; memory in MB."""
    import datasets

    from recipes.matryoshka import config
    from trainer import run
    from trainer.data.batches import check_batches
    from trainer.loop import Trainer
    from trainer.losses import MatryoshkaInfoNCE
    from trainer.models import load_model
    from trainer.tracking import Tracker, TrackingConfig

    datasets.disable_progress_bars()
    tracking = TrackingConfig(wandb="disabled")
    acc = run.make_accelerator("no", tracking, seed=0, cpu_threads=1)
    model = load_model(model_dir, preset="bge")
    loss_fn = MatryoshkaInfoNCE([32, 16], gather=False)
    cfg = replace(config([]).train, max_steps=3, checkpoint_every=0)
    memory = Memory()
    t0 = time.perf_counter()
    if hold == "list":  # as before: the rows in memory (received or mined), and Session.run's to_list() of them
        kept = datasets.load_from_disk(folder, keep_in_memory=True)
        rows = kept.to_list()
    else:
        from trainer.rows import load_rows

        rows = load_rows(Path(folder))
    with tempfile.TemporaryDirectory() as run_dir:
        check_batches(rows, cfg, 1)
        trainer = Trainer(model, rows, loss_fn, cfg, acc, Path(run_dir), Tracker(acc, Path(run_dir), tracking, {}, "bench"))
        t1 = time.perf_counter()
        trainer.fit()
        t2 = time.perf_counter()
    return {**memory.peaks(), "plan_s": t1 - t0, "steps_s": t2 - t1}


class Memory:
    """This process's peak RSS from now on, and apart the peaks of its anonymous and file-backed pages (MB)."""

    def __init__(self, every_s: float = 0.01):
        Path("/proc/self/clear_refs").write_text("5")  # the kernel's high-water mark restarts from the RSS of now
        self.start = self._status()
        self.high = dict(self.start)
        threading.Thread(target=self._watch, args=(every_s,), daemon=True).start()

    @staticmethod
    def _status() -> dict[str, float]:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}

    def _watch(self, every_s: float) -> None:
        while True:
            for key, value in self._status().items():
                self.high[key] = max(self.high[key], value)
            time.sleep(every_s)

    def peaks(self) -> dict[str, float]:
        """Above the start: ``peak`` (the kernel's high-water mark of RSS), ``anon`` and ``file`` (sampled peaks)."""
        return {"peak": self._status()["VmHWM"] - self.start["VmRSS"], "anon": self.high["RssAnon"] - self.start["RssAnon"],
                "file": self.high["RssFile"] - self.start["RssFile"]}


def mining_by_processes(source: str, counts: list[int]) -> None:
    """Mine ``source`` once per process count (``accelerate launch``, gloo on CPU); print files/s and 2 == 1."""
    with tempfile.TemporaryDirectory() as work:
        first = None
        for n in counts:
            out = Path(work) / f"n{n}"
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            launcher = ["--multi_gpu", "--main_process_port", str(port)] if n > 1 else ["--cpu"]
            cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", str(n),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "trainer.data", "mine", source, "--out", str(out)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            mining = json.loads((out / "report.json").read_text())["mining"]
            files = sum(mining["files"].values())
            same = "" if first is None else f"; rows {'==' if filecmp.cmp(first, out / 'train.jsonl', shallow=False) else '!='} 1st"
            print(f"mine {source} by {n} process(es): {files:,} files in {mining['seconds']:.1f} s, "
                  f"{files / mining['seconds']:.0f} files/s{same}")
            first = first or out / "train.jsonl"


if __name__ == "__main__":
    main()
