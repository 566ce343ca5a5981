"""A run's scaffolding: the accelerator, its data, before/after evaluation and the final export.

Recipes call these few functions in order, inside a :func:`trainer.run_folder.run_folder`;
rank-zero work happens only here, at visible points.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, broadcast_object_list, set_seed
from sentence_transformers import SentenceTransformer

from trainer import distributed, score_cache
from trainer.checkpoint import export_model, resolve_resume
from trainer.config import save_config, to_dict
from trainer.data import DataConfig
from trainer.data.beir import BeirData
from trainer.data.questions import check_question_set
from trainer.errors import CodetuneError
from trainer.evaluator import default_dims, evaluate, resolve_dims
from trainer.fileio import atomic_write_json
from trainer.hardware import resolve_precision, use_cpu_threads
from trainer.hub import HubConfig, push
from trainer.losses import LossConfig
from trainer.model_card import RunFacts, write_cards
from trainer.models import ModelConfig
from trainer.retrieval import Share
from trainer.run_folder import check_resume_config
from trainer.tables import before_after_table, print_table
from trainer.tracking import Tracker, TrackingConfig, uses_wandb


@dataclass
class EvalConfig:
    batch_size: int = 64
    dims: list[int] = field(default_factory=list)  # empty: the loss's Matryoshka dims
    # People's questions over code as written, scored before and after beside the held-out split:
    # shipped sets (staqc, click; see trainer.data.questions) or BEIR folders.
    questions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in self.questions:
            check_question_set(name)


@dataclass
class RunConfig:
    """What every recipe has: where the run goes, the model, the data, the loss, evaluation, tracking."""

    output_dir: str | None = None  # run folder; default runs/<recipe>-<time>
    overwrite: bool = False  # replace an existing output_dir
    # CPU only: threads per process; None: this machine's cores shared among its processes
    # (plain `accelerate launch` pins every process to 1 thread, half of a 2-core machine).
    cpu_threads: int | None = None
    # Longest wait in one collective before a process gives up: bounds the hang when a peer dies
    # (a dead node, an OOM kill). Work done by rank 0 alone (preparing the data) must fit in it.
    collective_timeout_s: int = 1800
    resume_from_checkpoint: str | None = None  # latest | auto | a checkpoint folder
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    hub: HubConfig = field(default_factory=HubConfig)


def make_accelerator(
    mixed_precision: str | None,
    tracking: TrackingConfig,
    seed: int,
    cpu_threads: int | None = None,
    collective_timeout_s: int = 1800,
) -> Accelerator:
    """The accelerator (devices, DDP, precision from ``accelerate launch`` unless overridden)."""
    if collective_timeout_s < 1:
        raise CodetuneError(f"collective_timeout_s: {collective_timeout_s} must be at least 1 second")
    mixed_precision = resolve_precision(mixed_precision)
    if not torch.cuda.is_available():
        use_cpu_threads(cpu_threads)
    # accelerate forms a gloo process group on a machine without GPUs only when told cpu=True;
    # otherwise `accelerate launch --multi_gpu --num_processes N` there gives N lone processes.
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Unused parameters are normal here: BERT's pooler, the other route of a Router model.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    group = InitProcessGroupKwargs(timeout=timedelta(seconds=collective_timeout_s))
    acc = Accelerator(
        mixed_precision=mixed_precision,
        cpu=cpu,
        log_with="wandb" if uses_wandb(tracking) else None,
        kwargs_handlers=[ddp, group],
    )
    set_seed(seed + acc.process_index)  # different dropout per process; DDP syncs the weights
    distributed.leave_at_exit()
    return acc


def start(cfg, run_dir: Path, acc: Accelerator, recipe: str | None = None) -> tuple[Path | None, Tracker]:
    """Checkpoint to resume from, resolved config saved, tracker started (in a :func:`run_folder`).

    A resumed run keeps the ``config.yaml`` it was started with (it is checked, not rewritten), so
    the file never states values that were not used.
    """
    resume_from = resolve_resume(run_dir, cfg.resume_from_checkpoint)
    own = run_dir / "config.yaml"
    if resume_from is not None:
        # A checkpoint of another run folder is checked against that run's config.
        check_resume_config(own if own.is_file() else resume_from.resolve().parents[1] / "config.yaml", cfg)
    if not own.is_file() and acc.is_main_process:
        save_config(cfg, own)
    tracker = Tracker(acc, run_dir, cfg.tracking, to_dict(cfg), run_name=run_dir.name, group=recipe)
    return resume_from, tracker


def matryoshka_dims(cfg: LossConfig, model: SentenceTransformer) -> list[int]:
    """The loss's dimensions, checked against the model."""
    full = model.get_embedding_dimension()
    return resolve_dims(cfg.matryoshka_dims, full, flag="loss.matryoshka_dims") if cfg.matryoshka_dims else default_dims(full)


def evaluate_main(
    model: SentenceTransformer,
    data: BeirData | None,
    dims: list[int],
    cfg: EvalConfig,
    acc: Accelerator,
    corpus: Share | None = None,
) -> dict | None:
    """Evaluate with every process encoding and scoring 1/N; metrics on the main process, else (or without data) None.

    No process waits at a barrier while another works: the shares meet only in the gathers.
    ``corpus``: the corpus already encoded the way ``model`` encodes documents (:func:`trainer.evaluator.encode_corpus`).
    """
    if data is None:
        return None
    result = evaluate(model, data, dims, batch_size=cfg.batch_size, across_processes=True, corpus=corpus)
    return result if acc.is_main_process else None


def evaluate_questions(
    model: SentenceTransformer, sets: dict[str, BeirData], dims: list[int], cfg: EvalConfig, acc: Accelerator
) -> dict | None:
    """:func:`evaluate_main` on each of ``eval.questions``' sets: ``{set: metrics}`` on the main process, else None."""
    out = {name: evaluate_main(model, data, dims, cfg, acc) for name, data in sets.items()}
    return out if acc.is_main_process and out else None


def evaluate_base(
    model: SentenceTransformer,
    data: BeirData | dict[str, BeirData] | None,
    dims: list[int],
    cfg: EvalConfig,
    acc: Accelerator,
    run_dir: Path,
    filename: str = "eval_before.json",
) -> dict | None:
    """:func:`evaluate_main` of the base model (of each set, given a dict of them), kept in
    ``run_dir/filename`` so a resumed run does not redo it, and in the user's cache
    (:mod:`trainer.score_cache`) so that a run on the same model and data does not either."""
    path = run_dir / filename
    done = [path.is_file()]
    if acc.num_processes > 1:
        broadcast_object_list(done)  # the main process decides: a node that cannot see the file must not evaluate alone
    if done[0]:
        return json.loads(path.read_text()) if acc.is_main_process else None
    identity = score_cache.model_identity(model) if acc.is_main_process else None
    if isinstance(data, dict):
        result = {name: _base_scores(model, one, identity, dims, cfg, acc, name) for name, one in data.items()}
        result = result if acc.is_main_process and result else None
    else:
        result = _base_scores(model, data, identity, dims, cfg, acc, "the held-out split")
    if result is not None:
        atomic_write_json(path, result)
    return result


def _base_scores(
    model: SentenceTransformer, data: BeirData | None, identity: str | None, dims: list[int], cfg: EvalConfig,
    acc: Accelerator, label: str,
) -> dict | None:
    """:func:`evaluate_main`, or the scores the model with ``identity`` already got on ``data`` (main process: it decides)."""
    if data is None:
        return None
    path = score_cache.cache_path(identity, data, dims, cfg.batch_size, str(acc.device)) if acc.is_main_process else None
    cached = [score_cache.load(path, dims) if acc.is_main_process else None]
    hit = [cached[0] is not None]
    if acc.num_processes > 1:
        broadcast_object_list(hit)  # every rank encodes its share, or none does
    if hit[0]:
        if acc.is_main_process:
            print(f"base scores on {label}: from the cache ({path})")
        return cached[0]
    result = evaluate_main(model, data, dims, cfg, acc)
    if result is not None:
        score_cache.store(path, result)
    return result


def log_eval(tracker: Tracker, metrics: dict, step: int, tag: str) -> None:
    """Evaluator metrics to the log and W&B as ``eval/<tag>/<metric>@<dim>``."""
    tracker.log({f"eval/{tag}/{name}@{dim}": v for dim, m in metrics.items() for name, v in m.items()}, step)


def finish(
    model: SentenceTransformer,
    run_dir: Path,
    before: dict | None,
    after: dict | None,
    eval_meta: dict,
    acc: Accelerator,
    title: str,
    facts: RunFacts | None = None,
    tracker: Tracker | None = None,
    questions: tuple[dict, dict] | None = None,
) -> Path:
    """Write ``eval.json``, print the before/after table, export ``run_dir/final`` (main process).

    ``questions``: the before and after metrics of each ``eval.questions`` set, printed as a table
    each and kept in ``eval.json`` under ``questions``.

    With ``facts``, ``final/`` (and a LoRA run's ``adapter/``) gets its own model card, and is
    pushed to ``hub.repo_id`` when the config names one. With ``tracker``, the W&B run gets the
    results table and plot, and the final model as an artifact.
    """
    final = run_dir / "final"
    if acc.is_main_process:
        if before is not None and after is not None:
            record = {"before": {**eval_meta, "metrics": before}, "after": {**eval_meta, "model": str(final), "metrics": after}}
            if questions is not None:
                record["questions"] = {name: {"before": questions[0][name], "after": m} for name, m in questions[1].items()}
            atomic_write_json(run_dir / "eval.json", record)
            print_table(before_after_table(before, after, title=title))
        if questions is not None:
            for name, metrics in questions[1].items():
                print_table(before_after_table(questions[0][name], metrics, title=f"people's questions: {name}"))
        export_model(model, final)
        if facts is not None:
            write_cards(run_dir, model, facts, before, after)
        print(f"saved {final}  (SentenceTransformer('{final}') loads it)")
        if tracker is not None:
            if before is not None and after is not None:
                tracker.log_results(before, after)
            recipe = facts.recipe if facts is not None else "model"
            tracker.log_model(final, f"{recipe}-{run_dir.name}", {"base_model": eval_meta.get("model"), "metrics": after})
        if facts is not None and facts.config.hub.repo_id:
            push(final, facts.config.hub, f"codetune {facts.recipe}: {run_dir.name}")
    acc.wait_for_everyone()
    return final
