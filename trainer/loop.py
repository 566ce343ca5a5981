"""The one training loop every recipe calls.

One optimizer step consumes ``gradient_accumulation_steps`` contrastive batches of
``batch_size`` rows per process. Within a contrastive batch every query sees every document of
every process as a negative. Two ways to grow the batch beyond memory:

* ``grad_cache_chunk > 0`` (GradCache, Gao et al. 2021): embed the whole batch without gradients
  in chunks, take the loss and its gradient w.r.t. the embeddings, then re-run each chunk with
  gradients and back-propagate those embedding gradients. The pool of negatives stays the whole
  batch; memory is that of one chunk.
* gradient accumulation: several smaller contrastive batches per step. Cheaper to reason about,
  but each batch only sees its own negatives, so it is *not* a bigger contrastive batch.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from sentence_transformers import SentenceTransformer
from transformers import get_linear_schedule_with_warmup

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.data.batches import batch_texts, length_order, run_batches, total_steps, with_negatives
from trainer.errors import CodetuneError, RunFailed
from trainer.losses import MatryoshkaInfoNCE
from trainer.models.forward import PairEncoder, count_tokens, tokenize
from trainer.preemption import Preempted, StopRequest
from trainer.rows import Rows
from trainer.teacher import Teacher
from trainer.tracking import Tracker


@dataclass
class TrainConfig:
    batch_size: int = 32  # contrastive batch per process; more negatives per query, more memory
    gradient_accumulation_steps: int = 1  # batches per optimizer step (each batch its own negatives)
    grad_cache_chunk: int = 0  # >0: GradCache, memory of this many rows while the batch stays batch_size
    hard_negatives: int | None = None  # per query, from the data's `negatives`; None: the most any row has (short rows topped up at random)
    lr: float = 5.0e-5
    weight_decay: float = 0.01
    adam_eps: float = 1.0e-8  # AdamW's epsilon; larger damps updates of parameters with near-zero gradients
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    max_steps: int = -1  # >0 overrides epochs
    max_grad_norm: float = 1.0
    group_by_length: bool = False  # batch code of similar length together: less padding, a bit less random
    # "file" | "folder": fill each batch with rows of a few source files (folders), so in-batch
    # negatives are the positive's neighbours in its project; None: random. Rows without a `path`
    # (users' own pairs) are placed at random.
    # Takes precedence over group_by_length.
    group_by_source: str | None = None
    source_share: float = 1.0  # with group_by_source: the share of each batch from grouped files; the rest at random
    # >1: documents of a batch are sorted by length and embedded in this many slices, each padded
    # only to its own longest text (same loss and gradient, less padding: code lengths vary ~10x)
    length_buckets: int = 1
    # On CPU, inputs padded to at most this many tokens use eager attention instead of SDPA's fused
    # kernel, whose backward is slow there on short inputs (trainer.models.forward.PairEncoder); 0: off
    eager_attention_max_tokens: int = 0
    seed: int = 42
    log_every: int = 10
    checkpoint_every: int = 200  # 0: only the final model
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.eager_attention_max_tokens < 0:
            raise CodetuneError(f"train.eager_attention_max_tokens: {self.eager_attention_max_tokens} must be 0 (off) or more")
        if self.length_buckets < 1:
            raise CodetuneError(f"train.length_buckets: {self.length_buckets} must be 1 or more")
        if not 0 < self.source_share <= 1:
            raise CodetuneError(f"train.source_share: {self.source_share} must be in (0, 1]")
        if self.group_by_source not in (None, "file", "folder"):
            raise CodetuneError(f"train.group_by_source: {self.group_by_source!r} must be file, folder or null")


class TrainingDiverged(CodetuneError):
    """The loss became NaN or infinite; the weights were not updated with it."""


class _RngState:
    """CPU and accelerator RNG state, so GradCache's second forward repeats the first's dropout."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


class Trainer:
    """Holds what one training run needs; :meth:`fit` runs it. Recipes build one and call ``fit``.

    ``rows``: a ``datasets.Dataset`` (memory-mapped in a run: each batch's rows are read when it is
    trained on; see :mod:`trainer.rows`) or a list of dicts.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        rows: Rows,
        loss_fn: MatryoshkaInfoNCE,
        cfg: TrainConfig,
        accelerator: Accelerator,
        run_dir: Path,
        tracker: Tracker,
        stop: StopRequest | None = None,
        teacher: Teacher | None = None,
    ):
        rows, cfg, filled = with_negatives(rows, cfg)
        if filled:
            accelerator.print(f"train.hard_negatives={cfg.hard_negatives}: {filled} missing ones filled with random documents")
        self.rows, self.cfg, self.accelerator, self.run_dir, self.tracker = rows, cfg, accelerator, run_dir, tracker
        self.module = model
        self.loss_fn = loss_fn
        self.teacher = teacher  # its embeddings of each batch's texts join the loss's target
        self.world = accelerator.num_processes
        self.steps = total_steps(cfg, len(rows), self.world)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([{"params": params, "lr": cfg.lr}], lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
        # Not passed to prepare(): accelerate would step a prepared scheduler once per process.
        self.scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * self.steps), self.steps)
        # On GPUs the fused kernels are fast both ways: eager attention is only a CPU trade.
        eager = cfg.eager_attention_max_tokens if accelerator.device.type == "cpu" else 0
        self.model, self.optimizer = accelerator.prepare(PairEncoder(model, eager), optimizer)
        self.params = params
        self.stop = stop or StopRequest()  # the recipe's, watching since before setup

    # -- one contrastive batch -------------------------------------------------------------

    def _embed(self, queries: list[str], docs: list[str]) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        """One forward over queries and documents (either may be empty); returns both and the token count."""
        device = self.accelerator.device
        qf = tokenize(self.module, queries, "query", device) if queries else None
        order = length_order(docs, self.cfg.length_buckets)
        size = math.ceil(len(docs) / self.cfg.length_buckets) if docs else 1
        slices = [order[i : i + size] for i in range(0, len(docs), size)]
        dfs = [tokenize(self.module, [docs[i] for i in s], "document", device) for s in slices]
        with self.accelerator.autocast():
            q, d = self.model(qf, dfs or None)
        if d is not None and len(slices) > 1:
            d = d[torch.argsort(torch.tensor(order, device=d.device))]  # back to the documents' order
        return q, d, sum(count_tokens(f) for f in [qf, *dfs] if f is not None)

    def _split(self, docs: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return docs[:b], (docs[b:] if docs.shape[0] > b else None)

    def _teacher(self, queries: list[str], docs: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.teacher.embed(queries, docs, self.accelerator.device) if self.teacher is not None else None

    def _plain_batch(self, queries: list[str], docs: list[str], scale: float, sync: bool) -> tuple[torch.Tensor, dict, int]:
        with nullcontext() if sync else self.accelerator.no_sync(self.model):
            q, d, tokens = self._embed(queries, docs)  # (b, D), (b * (1 + h), D)
            loss, per_dim = self.loss_fn(q, *self._split(d, len(queries)), self._teacher(queries, docs))
            self.accelerator.backward(loss * scale)
        return loss.detach(), per_dim, tokens

    def _cached_batch(self, queries: list[str], docs: list[str], scale: float, sync: bool) -> tuple[torch.Tensor, dict, int]:
        c = self.cfg.grad_cache_chunk
        order = length_order(docs, self.cfg.length_buckets)  # chunks of similar length pad less
        chunks = [(queries[i : i + c], []) for i in range(0, len(queries), c)]
        chunks += [([], [docs[j] for j in order[i : i + c]]) for i in range(0, len(docs), c)]
        states, embs, tokens = [], [], 0
        with torch.no_grad():
            for chunk in chunks:
                states.append(_RngState(self.accelerator.device))
                q, d, t = self._embed(*chunk)
                embs.append((q if q is not None else d).float())
                tokens += t
        nq = math.ceil(len(queries) / c)
        q = torch.cat(embs[:nq]).requires_grad_()  # (b, D), a leaf: its .grad is the cache
        d = torch.cat(embs[nq:]).requires_grad_()  # (b * (1 + h), D), in `order`
        inverse = torch.argsort(torch.tensor(order, device=d.device))
        loss, per_dim = self.loss_fn(q, *self._split(d[inverse], len(queries)), self._teacher(queries, docs))
        loss.backward()
        grads = list(q.grad.split(c)) + list(d.grad.split(c))
        for i, (chunk, state, grad) in enumerate(zip(chunks, states, grads)):
            last = sync and i == len(chunks) - 1
            with nullcontext() if last else self.accelerator.no_sync(self.model):
                state.restore()
                q, d, _ = self._embed(*chunk)
                e = q if q is not None else d
                self.accelerator.backward((e.float() * grad).sum() * scale)
        return loss.detach(), per_dim, tokens

    # -- checkpoints -------------------------------------------------------------------------

    def _save(self, step: int) -> Path:
        state = {"scheduler": self.scheduler.state_dict()}  # a few numbers: JSON, never a pickle
        return save_checkpoint(self.accelerator, self.run_dir, step, self.cfg.keep_checkpoints, state)

    def _resume(self, path: Path) -> int:
        state = load_checkpoint(self.accelerator, path)
        step = int(state["step"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        else:  # checkpoints of codetune 0.1 kept it in a pickle, which is not loaded: the schedule is a function of the step
            for _ in range(step):
                self.scheduler.step()
        return step

    # -- the loop --------------------------------------------------------------------------

    def fit(self, resume_from: Path | None = None) -> int:
        """Train to the last step, checkpointing on schedule; returns the number of steps done.

        Raises:
            TrainingDiverged: on a non-finite loss, before the optimizer applies it.
            Preempted: after saving a checkpoint because a stop was requested.
        """
        cfg, acc = self.cfg, self.accelerator
        start = self._resume(resume_from) if resume_from else 0
        if start:
            self.tracker.rewind(start)  # steps after the checkpoint were lost with the kill; they run again
        accum = cfg.gradient_accumulation_steps
        batches = run_batches(self.rows, cfg, self.world)
        for _ in range(start * accum):  # the plan is deterministic: skipping replays it exactly
            next(batches)
        step_fn = self._cached_batch if cfg.grad_cache_chunk > 0 else self._plain_batch
        b, r = cfg.batch_size, acc.process_index
        self.model.train()
        self.tracker.progress(self.steps, start)
        last_saved = None
        step = start
        try:  # the bar ends its line before any error is printed
            for step in range(start + 1, self.steps + 1):
                t0 = time.perf_counter()
                loss_sum, tokens, per_dim_sum = 0.0, 0, {}
                for micro in range(accum):
                    batch = self.rows.take(next(batches)[r * b : (r + 1) * b])  # this process's share, read now
                    queries, docs = batch_texts(batch, cfg.hard_negatives)  # (b,), (b * (1 + h),)
                    loss, per_dim, t = step_fn(queries, docs, 1.0 / accum, sync=micro == accum - 1)
                    loss_sum += loss.item() / accum
                    tokens += t
                    for dim, v in per_dim.items():
                        per_dim_sum[dim] = per_dim_sum.get(dim, 0.0) + v.item() / accum
                # One collective per step for the logged loss, throughput and the stop flag.
                stats = torch.tensor([loss_sum, tokens, float(self.stop.requested())], device=acc.device)
                stats = acc.reduce(stats, reduction="sum")
                loss_mean = stats[0].item() / self.world
                if not math.isfinite(loss_mean):
                    self.optimizer.zero_grad(set_to_none=True)
                    ckpt = f"; the last good checkpoint is {last_saved}" if last_saved else ""
                    raise TrainingDiverged(f"loss is {loss_mean} at step {step}; weights were not updated{ckpt}")
                grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                dt = time.perf_counter() - t0
                self.tracker.advance()
                if step % cfg.log_every == 0 or step == self.steps or step == start + 1:
                    metrics = {
                        "loss": loss_mean,
                        "lr": self.scheduler.get_last_lr()[-1],
                        "grad_norm": float(grad_norm),
                        "pairs_per_s": b * self.world * accum / dt,
                        "tokens_per_s": stats[1].item() / dt,
                    }
                    # per-dim losses are this process's; close to the global mean, and free to log
                    metrics.update({f"loss/dim{dim}": v for dim, v in per_dim_sum.items()})
                    self.tracker.log(metrics, step)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < self.steps:
                    last_saved = self._save(step)
                if stats[2].item() > 0:
                    if last_saved is None or not last_saved.name.endswith(f"-{step}"):
                        last_saved = self._save(step)
                    raise Preempted(step, last_saved)
        except RuntimeError as err:
            if self.world > 1 and _peer_lost(err):
                ckpt = f"resume_from_checkpoint=latest continues from {last_saved or 'the last checkpoint'}"
                raise RunFailed(f"step {step}: lost contact with another process (it died, or its node did): {ckpt}") from err
            raise
        finally:
            self.tracker.close_progress()
        return self.steps


def _peer_lost(err: RuntimeError) -> bool:
    """A collective failed because a peer went away (gloo and NCCL raise plain RuntimeErrors)."""
    text = str(err)
    return isinstance(err, torch.distributed.DistError) or any(
        k in text for k in ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL", "Timed out")
    )
