"""Index the functions of this virtualenv's site-packages: time, functions/s, peak RAM, size, re-index after one edit.

    python bench/search_scale.py --functions 5000      # a subset (copied to a temporary tree), extrapolated
    python bench/search_scale.py --functions 0         # every file (312,807 functions here: 68 min on 2 cores, bf16)
    python bench/search_scale.py --functions 2000 --copies 150 --model tiny  # re-index steps at 300k functions

A subset takes whole files in a fixed shuffled order until it holds ``--functions`` functions,
copied (timestamps kept) into a temporary tree so that the edit below never touches the real
site-packages. Then: a full ``build_index``; a re-index with nothing changed; one file given a new
function and re-indexed, with each step's wall and CPU seconds. Wall and CPU seconds are both
printed: on a shared machine wall time measures the neighbours too.

Only encoding costs per function at the model's pace; the other re-index steps may grow with the
index. To time those at 100k functions without hours of parsing and encoding, ``--copies K``
replicates the built subset K times (tree and index, as a build over the copies would leave it) and
re-indexes that, and ``--model tiny`` encodes with a random 2-layer BERT: its encode column is not
a real model's (time the edited file's encoding with the default model at a small ``--functions``).
The full-size line scales the subset's per-function costs by the site-packages' bytes of source.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def subset(site: Path, functions: int, dest: Path) -> tuple[int, int, int, int]:
    """Copy whole files into ``dest`` until they hold ``functions`` functions (0: all).

    Returns (files copied, their bytes, all source files, all source bytes).
    """
    from trainer.data.languages import extract_functions
    from trainer.data.mining import SourceTree, source_files

    listed = list(source_files(SourceTree(site)))
    total_bytes = sum(f.stat().st_size for f, _, _ in listed)
    random.Random(0).shuffle(listed)
    count = copied = copied_bytes = 0
    for file, rel, grammar in listed:
        if functions and count >= functions:
            break
        try:
            count += len(extract_functions(rel, file.read_text(encoding="utf-8"), grammar))
        except Exception:  # the index skips what it cannot read or parse; so does the count
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
        copied += 1
        copied_bytes += file.stat().st_size
    return copied, copied_bytes, len(listed), total_bytes


def replicate(src: Path, out: Path, copies: int) -> None:
    """Make the index at ``out`` over ``src/copy-0`` hold ``copies`` copies of it, as a build over them would.

    The tree is copied (timestamps kept) to ``src/copy-1``...; each copy's snippets, vectors and
    file records are copy-0's under its own prefix, so re-indexing finds every file as it recorded
    it. Only setting up costs less than a full build: each distinct text is tokenized once.
    """
    import functools
    from dataclasses import replace

    import numpy as np

    from trainer.search import lexical as lex
    from trainer.search.dense import DenseIndex
    from trainer.search.snippets import document_text
    from trainer.search.store import load_index, write_index

    old = load_index(out)
    snippets, files = [], {}
    for c in sorted(range(copies), key=lambda c: f"copy-{c}"):  # the order a build lists them: copy-1, copy-10, ...
        if c:
            shutil.copytree(src / "copy-0", src / f"copy-{c}")  # copy2: size and mtime as recorded
        pre = f"copy-{c}/"
        snippets += [replace(s, id=pre + s.id.removeprefix("copy-0/"), path=pre + s.path.removeprefix("copy-0/"))
                     for s in old.snippets]
        files.update({pre + p.removeprefix("copy-0/"): r for p, r in old.files.items()})
    dense = DenseIndex(old.precision, old.dim, np.tile(old.dense.vectors, (copies, 1)), old.dense.ranges)
    real = lex.tokens
    lex.tokens = functools.lru_cache(maxsize=None)(real)
    try:
        lexical = lex.LexicalIndex.build([document_text(s) for s in snippets])
    finally:
        lex.tokens = real
    write_index(out, {**old.manifest, "count": len(snippets)}, snippets, dense, lexical, files)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--functions", type=int, default=5000, help="subset size; 0 indexes everything")
    parser.add_argument("--model", default="default",
                        help="a model spec, or 'tiny': a random 2-layer BERT built here, to time the steps other than encoding at large N")
    parser.add_argument("--copies", type=int, default=1,
                        help="re-index an index of this many copies of the subset (see replicate); 1: the subset alone")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--compute", default="auto",
                        help="encoding arithmetic: auto (bf16 where the hardware has it), bf16, fp32, openvino, openvino-int8")
    parser.add_argument("--max-tokens", type=int, help="cut each function at this many tokens (default: the model's own limit)")
    parser.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    args = parser.parse_args()

    import torch

    from trainer.models import load_model
    from trainer.models.backends import load_encoder
    from trainer.retrieval import ENCODER_COMPUTES, resolve_compute
    from trainer.search import build_index, load_index

    work = Path(tempfile.mkdtemp(prefix="codetune-scale-"))
    try:
        src, out = work / "src", work / "index"
        files, nbytes, all_files, all_bytes = subset(args.site_packages, args.functions, src / "copy-0")
        label = args.model
        if args.model == "tiny":
            label = "tiny (random 2-layer BERT, 32 dims: times every step but encoding)"
            from tests.conftest import make_tiny_bert

            args.model = str(make_tiny_bert(work / "tiny-bert"))
            model = load_model(args.model, preset="bge")
            model.max_seq_length = 16  # its vectors mean nothing anyway: spend the CPU on the steps measured
        else:  # as `index` loads it: an OpenVINO graph for those computes (exported once, before the clock)
            model = load_encoder(args.model, resolve_compute(args.compute, choices=ENCODER_COMPUTES), max_seq_length=args.max_tokens)
        base_rss = peak_rss_mb()

        def build():
            return build_index([src], out, args.model, model=model, precision=args.precision, compute=args.compute,
                               max_tokens=args.max_tokens)

        stats, wall, cpu = timed(build)
        rss = peak_rss_mb()
        size = folder_bytes(out)
        built = load_index(out)
        gen = out / built.manifest["generation"]
        parts = {p.name: folder_bytes(p) if p.is_dir() else p.stat().st_size for p in gen.iterdir()}
        n = stats.snippets
        if args.copies > 1:
            replicate(src, out, args.copies)

        same, same_wall, same_cpu = timed(build)
        victim = next(p for p in sorted(src.rglob("*.py")) if p.stat().st_size > 2000)
        victim.write_text(victim.read_text(encoding="utf-8") + "\n\ndef added_by_the_bench(x):\n    return x\n")
        edit, edit_wall, edit_cpu = timed(build)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    scale = all_bytes / nbytes
    full_n = n * scale if args.functions else n
    print(f"site-packages: {all_files} source files, {all_bytes / 1e6:.0f} MB; subset: {files} files, "
          f"{nbytes / 1e6:.1f} MB ({100 / scale:.1f} % of the bytes)")
    print(f"model {label}, precision {args.precision}, compute {built.manifest['compute']}, dim {built.dim}, "
          f"{model.max_seq_length} tokens, "
          f"{torch.get_num_threads()} threads\n")
    if args.copies > 1:
        print(f"re-index rows: an index of {args.copies} copies of the subset (replicated from its build, not built)")
    print("| step | functions | wall s | CPU s | functions/s (wall) | notes |\n|---|---:|---:|---:|---:|---|")
    print(f"| index | {n} | {wall:.1f} | {cpu:.1f} | {n / wall:.1f} | steps (wall s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in stats.seconds.items()) + " |")
    print(f"| re-index, nothing changed | {same.snippets} | {same_wall:.1f} | {same_cpu:.1f} | – | "
          f"{same.unread_files} of {same.files} files not read, encoded {same.encoded} |")
    print(f"| re-index, one file edited | {edit.snippets} | {edit_wall:.1f} | {edit_cpu:.1f} | – | encoded {edit.encoded} |")
    print("\nunchanged re-index by step (wall s / CPU s): "
          + ", ".join(f"{k} {v:.2f} / {same.cpu_seconds[k]:.2f}" for k, v in same.seconds.items())
          + ("; nothing written" if same.unchanged else "; a new generation written"))
    print("one-file re-index by step (wall s / CPU s): "
          + ", ".join(f"{k} {v:.2f} / {edit.cpu_seconds[k]:.2f}" for k, v in edit.seconds.items()))
    print(f"\npeak RSS {rss:.0f} MB (model loaded: {base_rss:.0f} MB); index {size / 1e6:.1f} MB = "
          f"{size / max(n, 1):.0f} bytes per function: " + ", ".join(f"{k} {v / max(n, 1):.0f}" for k, v in sorted(parts.items())))
    if args.functions:
        linear = sum(v for k, v in edit.cpu_seconds.items() if k != "encode")  # steps that may touch every function
        print(f"\nextrapolated to all of site-packages (x{scale:.1f} the bytes, linear; rough from a small subset): "
              f"~{full_n:,.0f} functions, index ~{cpu * scale / 3600:.1f} CPU hours at {n / cpu:.1f} functions/s, "
              f"~{size * scale / 1e9:.2f} GB on disk; a one-file re-index of {edit.snippets} functions spent "
              f"{linear:.1f} CPU s on steps other than encoding (~{linear * full_n / edit.snippets:.0f} s at full size "
              f"if they all grow linearly) plus its encode")

if __name__ == "__main__":
    main()
