"""Data at scale: mine every installed distribution (``pkg:*``), then run the post-split steps at 10k and 100k rows.

    OMP_NUM_THREADS=1 python bench/data_scale.py                       # pkg:* less the bench's out-of-domain projects
    python bench/data_scale.py --exclude none --scales 10000          # everything installed; one scale
    python bench/data_scale.py --processes 1 2 --scales               # + mining the stdlib by 1 and by 2 processes

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
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import socket
import subprocess
import sys
import tempfile
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
    args = parser.parse_args()
    exclude = [] if args.exclude == ["none"] else args.exclude
    if args.processes:
        mining_by_processes(args.mine, args.processes)
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
