"""The only module that talks to torch.distributed: rank helpers, gathers, and joining a launcher's group.

One process is the trivial case of N: every function here works without a process group.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's shard.

    ``Accelerator.gather`` has no autograd, and swapping only the local shard back in (OpenCLIP's
    ``local_loss`` trick) drops the gradient that other ranks' losses send to our documents. Summing
    it back with an all_reduce makes N processes with batch b step exactly like one with batch N*b.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # note: every rank must reach this backward
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank in rank order, differentiably.

    Args:
        tensor: (b, ...) with the same shape on every rank.

    Returns:
        (world_size * b, ...); this rank's rows sit at ``rank * b``.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on at least one; a collective call."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` in rank order, when ranks hold different numbers of rows (no gradient).

    Args:
        tensor: (n_r, ...) with the same trailing shape, dtype and device type on every rank.

    Returns:
        (sum of n_r, ...); ``tensor`` itself when not distributed.
    """
    if not is_distributed():
        return tensor
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.empty_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))  # all_gather needs one shape on every rank
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:c] for part, c in zip(parts, counts)])


def all_gather_objects(obj: object) -> list:
    """Every rank's ``obj`` (any picklable value), in rank order, on every rank; ``[obj]`` when not distributed.

    A collective call: every rank must make it. Objects travel pickled (gloo on CPU; with NCCL
    through this rank's GPU), so keep them to plain data: strings, numbers, arrays.
    """
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave_at_exit() -> None:
    """Destroy the default process group, if there is one, when the interpreter exits (registered once).

    Left to the interpreter's own teardown, gloo's worker threads can be destroyed while still
    joinable and a process aborts after its work is done (SIGABRT, "terminate called without an
    active exception"): a finished job would fail under its launcher, SLURM included.
    """
    atexit.unregister(_leave)
    atexit.register(_leave)


def join_launch(timeout_s: int = 1800) -> torch.device:
    """Join the process group that ``accelerate launch`` (or torchrun) set up, for a CLI; returns this process's device.

    Started without a launcher it forms no group: one process on the best device. On a machine
    without GPUs, N launched processes join over gloo (accelerate does that only when told ``cpu``).
    """
    from accelerate import PartialState  # here: `codetune search` imports this module and never needs accelerate

    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = PartialState(cpu=cpu, timeout=timedelta(seconds=timeout_s)).device
    leave_at_exit()
    return device
