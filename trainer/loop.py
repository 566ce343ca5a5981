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
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from sentence_transformers import SentenceTransformer
from transformers import get_linear_schedule_with_warmup

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.data.sampler import plan_batches, text_keys
from trainer.errors import CodetuneError, RunFailed
from trainer.losses import MatryoshkaInfoNCE
from trainer.models.forward import PairEncoder, count_tokens, tokenize
from trainer.models.layer_lr import layerwise_param_groups
from trainer.preemption import Preempted, StopRequest
from trainer.tracking import Tracker


@dataclass
class TrainConfig:
    batch_size: int = 32  # contrastive batch per process; more negatives per query, more memory
    gradient_accumulation_steps: int = 1  # batches per optimizer step (each batch its own negatives)
    grad_cache_chunk: int = 0  # >0: GradCache, memory of this many rows while the batch stays batch_size
    hard_negatives: int | None = None  # per query, from the data's `negatives`; None: the most any row has (short rows topped up at random)
    lr: float = 5.0e-5
    layer_lr_decay: float = 1.0  # <1: each encoder layer trains at this times the lr of the one above it
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
    seed: int = 42
    log_every: int = 10
    checkpoint_every: int = 200  # 0: only the final model
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.layer_lr_decay <= 1:
            raise CodetuneError(f"train.layer_lr_decay: {self.layer_lr_decay} must be in (0, 1]")
        if self.length_buckets < 1:
            raise CodetuneError(f"train.length_buckets: {self.length_buckets} must be 1 or more")
        if not 0 < self.source_share <= 1:
            raise CodetuneError(f"train.source_share: {self.source_share} must be in (0, 1]")
        if self.group_by_source not in (None, "file", "folder"):
            raise CodetuneError(f"train.group_by_source: {self.group_by_source!r} must be file, folder or null")


def source_groups(rows: list[dict], by: str | None) -> list[str] | None:
    """Per row, the file (or folder) its code came from, for :func:`plan_batches`; None when ``by`` is None.

    Rows without a ``path`` (users' own pairs) are each a group of their own, so they are placed
    at random; when no row has one, batches are random and None is returned.
    """
    if by is None or not any(r.get("path") for r in rows):
        return None
    return [
        (r["path"] if by == "file" else str(Path(r["path"]).parent)) if r.get("path") else f"\0row{i}"
        for i, r in enumerate(rows)
    ]


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


def _batches(keys, lengths, global_batch: int, seed: int, groups=None, share: float = 1.0) -> Iterator[list[int]]:
    epoch = 0
    while True:
        plan = plan_batches(keys, global_batch, seed, epoch, lengths, groups=groups, group_share=share)
        if not plan:
            raise CodetuneError(
                f"train.batch_size: not enough distinct training pairs ({len(keys)}) for one batch of {global_batch}"
            )
        yield from plan
        epoch += 1


def fill_negatives(rows: list[dict], h: int, seed: int) -> tuple[list[dict], int]:
    """Give every row exactly ``h`` negatives, topping up short rows with random other positives.

    Every process must contribute the same number of documents to the gathered pool, and
    dropping rows whose mining window ran dry would waste their pairs; a random document is
    the in-batch kind of negative, so it is a safe filler.

    Returns:
        The rows (new dicts) and how many negatives were filled in.
    """
    pool = list(dict.fromkeys(r["positive"] for r in rows))
    if len(pool) <= h:
        raise CodetuneError(f"train.hard_negatives={h}: needs more than {h} distinct documents, found {len(pool)}")
    rng = random.Random(seed)
    out, filled = [], 0
    for row in rows:
        negs = list(row.get("negatives") or [])[:h]
        while len(negs) < h:
            other = pool[rng.randrange(len(pool))]
            if other != row["positive"] and other not in negs:
                negs.append(other)
                filled += 1
        out.append({**row, "negatives": negs})
    return out, filled


def with_negatives(rows: list[dict], cfg: TrainConfig) -> tuple[list[dict], TrainConfig, int]:
    """Rows with exactly ``cfg.hard_negatives`` negatives each (None: as many as the data has), the
    config with that number, and how many negatives were filled in (see :func:`fill_negatives`)."""
    if cfg.hard_negatives is None:
        cfg = replace(cfg, hard_negatives=max((len(r.get("negatives") or []) for r in rows), default=0))
    if cfg.hard_negatives == 0:
        return rows, cfg, 0
    rows, filled = fill_negatives(rows, cfg.hard_negatives, cfg.seed)
    return rows, cfg, filled


def _run_batches(rows: list[dict], cfg: TrainConfig, world: int) -> Iterator[list[int]]:
    """The run's global batches of row indices, epoch after epoch, exactly as training draws them."""
    keys = text_keys(rows, cfg.hard_negatives)
    lengths = [len(r["positive"]) for r in rows] if cfg.group_by_length and not cfg.group_by_source else None
    groups = source_groups(rows, cfg.group_by_source)
    return _batches(keys, lengths, cfg.batch_size * world, cfg.seed, groups, cfg.source_share)


def _plans_fill(rows: list[dict], cfg: TrainConfig, world: int) -> bool:
    """Whether the run's batches last to its last step.

    Plans differ by epoch (and by grouping, which lays rows of a file side by side, whose
    negatives clash most): a check of one ungrouped plan passed batches that a later epoch of
    the real, grouped plan could not fill.
    """
    batches = _run_batches(rows, cfg, world)
    try:
        for _ in range(total_steps(cfg, len(rows), world) * cfg.gradient_accumulation_steps):
            next(batches)
    except CodetuneError:  # an epoch whose plan holds no batch
        return False
    return True


def check_batches(rows: list[dict], cfg: TrainConfig, world: int) -> None:
    """Fail before any expensive step when the rows cannot fill the run's contrastive batches.

    A batch may not hold a text twice (a repeated document would be its own false negative), so
    each row's query, positive and hard negatives must be new to it: with shared negatives the
    limit is far below the number of rows. Every epoch the run reaches is planned as training
    will plan it. The error names the largest batch that works.

    Raises:
        CodetuneError: naming the real cause and the largest ``train.batch_size`` that works.
    """
    rows, cfg, _ = with_negatives(rows, cfg)
    if _plans_fill(rows, cfg, world):
        return
    lo, hi = 0, cfg.batch_size  # largest per-process batch with a plan: lo works, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _plans_fill(rows, replace(cfg, batch_size=mid), world) else (lo, mid)
    cause = f"{len(rows)} rows"
    if cfg.hard_negatives:
        cause += f" whose {cfg.hard_negatives} hard negatives each overlap (no text may appear twice in a batch)"
    if cfg.group_by_source:
        cause += f", batched by {cfg.group_by_source},"
    per = f" per process ({world} processes)" if world > 1 else ""
    fix = f"the largest that works is train.batch_size={lo}{per}" if lo >= 2 else "add data"
    raise CodetuneError(f"train.batch_size: {cfg.batch_size}{per} is more than {cause} can fill; {fix}")


def total_steps(cfg: TrainConfig, n_rows: int, world: int) -> int:
    """Optimizer steps of the run: ``max_steps``, or ``epochs`` worth of full batches."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = n_rows // (cfg.batch_size * world * cfg.gradient_accumulation_steps)
    return max(1, math.ceil(cfg.epochs * per_epoch))


class Trainer:
    """Holds what one training run needs; :meth:`fit` runs it. Recipes build one and call ``fit``."""

    def __init__(
        self,
        model: SentenceTransformer,
        rows: list[dict],
        loss_fn: MatryoshkaInfoNCE,
        cfg: TrainConfig,
        accelerator: Accelerator,
        run_dir: Path,
        tracker: Tracker,
        stop: StopRequest | None = None,
    ):
        rows, cfg, filled = with_negatives(rows, cfg)
        if filled:
            accelerator.print(f"train.hard_negatives={cfg.hard_negatives}: {filled} missing ones filled with random documents")
        self.rows, self.cfg, self.accelerator, self.run_dir, self.tracker = rows, cfg, accelerator, run_dir, tracker
        self.module = model
        self.loss_fn = loss_fn
        self.world = accelerator.num_processes
        self.steps = total_steps(cfg, len(rows), self.world)
        groups = layerwise_param_groups(model, cfg.lr, cfg.layer_lr_decay)
        params = [p for g in groups for p in g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
        # Not passed to prepare(): accelerate would step a prepared scheduler once per process.
        self.scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * self.steps), self.steps)
        self.model, self.optimizer = accelerator.prepare(PairEncoder(model), optimizer)
        self.params = params
        self.stop = stop or StopRequest()  # the recipe's, watching since before setup

    # -- one contrastive batch -------------------------------------------------------------

    def _texts(self, idx: list[int]) -> tuple[list[str], list[str]]:
        """Queries (b) and documents: b positives, then b*h hard negatives grouped by query."""
        rows = [self.rows[i] for i in idx]
        h = self.cfg.hard_negatives
        docs = [r["positive"] for r in rows]
        if h:
            docs += [neg for r in rows for neg in r["negatives"][:h]]
        return [r["query"] for r in rows], docs

    def _embed(self, queries: list[str], docs: list[str]) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        """One forward over queries and documents (either may be empty); returns both and the token count."""
        device = self.accelerator.device
        qf = tokenize(self.module, queries, "query", device) if queries else None
        order = self._length_order(docs)
        size = math.ceil(len(docs) / self.cfg.length_buckets) if docs else 1
        slices = [order[i : i + size] for i in range(0, len(docs), size)]
        dfs = [tokenize(self.module, [docs[i] for i in s], "document", device) for s in slices]
        with self.accelerator.autocast():
            q, d = self.model(qf, dfs or None)
        if d is not None and len(slices) > 1:
            d = d[torch.argsort(torch.tensor(order, device=d.device))]  # back to the documents' order
        return q, d, sum(count_tokens(f) for f in [qf, *dfs] if f is not None)

    def _length_order(self, docs: list[str]) -> list[int]:
        """Document indices shortest first when ``length_buckets`` > 1 (slices then pad less), else as given."""
        order = list(range(len(docs)))
        if self.cfg.length_buckets > 1:
            order.sort(key=lambda i: len(docs[i]))
        return order

    def _split(self, docs: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return docs[:b], (docs[b:] if docs.shape[0] > b else None)

    def _plain_batch(self, queries: list[str], docs: list[str], scale: float, sync: bool) -> tuple[torch.Tensor, dict, int]:
        with nullcontext() if sync else self.accelerator.no_sync(self.model):
            q, d, tokens = self._embed(queries, docs)  # (b, D), (b * (1 + h), D)
            loss, per_dim = self.loss_fn(q, *self._split(d, len(queries)))
            self.accelerator.backward(loss * scale)
        return loss.detach(), per_dim, tokens

    def _cached_batch(self, queries: list[str], docs: list[str], scale: float, sync: bool) -> tuple[torch.Tensor, dict, int]:
        c = self.cfg.grad_cache_chunk
        order = self._length_order(docs)  # chunks of similar length pad less
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
        loss, per_dim = self.loss_fn(q, *self._split(d[inverse], len(queries)))
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
        batches = _run_batches(self.rows, cfg, self.world)
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
                    queries, docs = self._texts(next(batches)[r * b : (r + 1) * b])
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
                        "lr": self.scheduler.get_last_lr()[-1],  # the top layers' (groups run bottom up)
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
