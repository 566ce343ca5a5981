"""What this machine offers a run: bf16 matrix units, the mixed precision that follows, CPU threads,
and a bound on oneDNN's cache of compiled kernels.

The one hardware check: training's ``mixed_precision: auto``, inference's ``compute: auto`` and a
decoder's weight dtype all ask :func:`bf16_supported`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trainer.errors import CodetuneError

ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = 8  # compiled kernels oneDNN keeps (its own default: 1,024); see bound_onednn_cache


def bf16_supported() -> bool:
    """bf16 matrix units: a CUDA device with bf16, or a CPU with AMX or AVX512-BF16 (about 1.7x fp32 speed there)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(mixed_precision: str | None) -> str | None:
    """``auto``: bf16 where the hardware has it, else fp32; other values pass through (None: the launcher's)."""
    if mixed_precision not in (None, "auto", "no", "fp16", "bf16"):
        raise CodetuneError(f"mixed_precision: expected auto, no, fp16 or bf16, got {mixed_precision!r}")
    if mixed_precision == "auto":
        return "bf16" if bf16_supported() else "no"
    return mixed_precision


def use_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op threads for a CPU run; returns the number set.

    ``accelerate launch`` without ``--cpu`` exports OMP_NUM_THREADS=1 whatever the machine, which
    halves a 2-core run; None shares the cores among this node's processes instead.
    """
    if threads is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, (os.cpu_count() or 1) // local)
    if threads < 1:
        raise CodetuneError(f"cpu_threads: {threads} must be at least 1")
    bound_onednn_cache()
    torch.set_num_threads(threads)
    return threads


def bound_onednn_cache() -> None:
    """Keep at most :data:`ONEDNN_CACHE_CAPACITY` compiled oneDNN kernels, unless the environment says otherwise.

    On CPU, torch runs linear layers (bf16 above all) through oneDNN, which compiles a kernel per
    input shape and caches up to 1,024 of them, with their weight copies and scratch buffers. Every
    batch codetune trains on or encodes has a shape of its own (padded to its longest text, length
    slices), so the cache only grows. Capped at 8, the default run's peak is 3.93 GB against 5.23
    at the same training time (docs/scale.md). oneDNN reads the variable when it first compiles a
    kernel, so this must run before the first matrix product of the process; it changes nothing after.
    """
    os.environ.setdefault(ONEDNN_CACHE_ENV, str(ONEDNN_CACHE_CAPACITY))
