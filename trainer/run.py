"""A run's scaffolding: its folder, the accelerator, before/after evaluation and the final export.

Recipes call these few functions in order; rank-zero work happens only here, at visible points.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from sentence_transformers import SentenceTransformer

from trainer.checkpoint import export_model, resolve_resume
from trainer.config import save_config, to_dict
from trainer.data import DataConfig
from trainer.data.beir import BeirData
from trainer.errors import CodetuneError
from trainer.evaluator import default_dims, evaluate, resolve_dims
from trainer.fileio import atomic_write_json
from trainer.tables import before_after_table, print_table
from trainer.tracking import Tracker, TrackingConfig, uses_wandb


@dataclass
class ModelConfig:
    name: str = "default"  # default (all-MiniLM-L6-v2, embedded), a local folder, or a hub name
    preset: str | None = None  # bge | codebert | none; None: guessed from the name
    max_seq_length: int = 256  # tokens; code is long, attention cost grows with the square of this
    trust_remote_code: bool = False  # run code shipped with a hub model; only for repositories you trust


@dataclass
class LossConfig:
    temperature: float = 0.05  # lower: sharper softmax, harder negatives weigh more
    matryoshka_dims: list[int] = field(default_factory=list)  # empty: full dim and 512/256/128/64 below it
    matryoshka_weights: list[float] | None = None  # one per dim; None: all 1
    gather_across_devices: bool = True  # every process's documents are negatives for every query


@dataclass
class EvalConfig:
    batch_size: int = 64
    dims: list[int] = field(default_factory=list)  # empty: the loss's Matryoshka dims


@dataclass
class RunConfig:
    """What every recipe has: where the run goes, the model, the data, the loss, evaluation, tracking."""

    output_dir: str | None = None  # run folder; default runs/<recipe>-<time>
    overwrite: bool = False  # replace an existing output_dir
    resume_from_checkpoint: str | None = None  # latest | auto | a checkpoint folder
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def prepare_run_dir(output_dir: str | None, recipe: str, resume: str | None, overwrite: bool, acc: Accelerator) -> Path:
    """Create (or reuse, when resuming) the run folder; never clobber one that was not offered up.

    Raises:
        CodetuneError: when ``output_dir`` holds a run and neither resume nor overwrite was asked.
    """
    name = [output_dir or f"runs/{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"]
    broadcast_object_list(name)  # ranks must agree on a timestamped default
    run_dir = Path(name[0])
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if occupied and not resume and not overwrite:
        raise CodetuneError(
            f"output_dir {run_dir}: already holds a run; pass resume_from_checkpoint=latest to continue it, "
            "overwrite=true to replace it, or another output_dir"
        )
    acc.wait_for_everyone()
    if acc.is_main_process:
        if occupied and overwrite and not resume:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    return run_dir


def make_accelerator(mixed_precision: str | None, tracking: TrackingConfig, seed: int) -> Accelerator:
    """The accelerator (devices, DDP, precision from ``accelerate launch`` unless overridden)."""
    if mixed_precision not in (None, "no", "fp16", "bf16"):
        raise CodetuneError(f"mixed_precision: expected no, fp16 or bf16, got {mixed_precision!r}")
    # accelerate forms a gloo process group on a machine without GPUs only when told cpu=True;
    # otherwise `accelerate launch --multi_gpu --num_processes N` there gives N lone processes.
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Unused parameters are normal here: BERT's pooler, the other route of a Router model.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    acc = Accelerator(
        mixed_precision=mixed_precision, cpu=cpu, log_with="wandb" if uses_wandb(tracking) else None, kwargs_handlers=[ddp]
    )
    set_seed(seed + acc.process_index)  # different dropout per process; DDP syncs the weights
    return acc


def start(cfg, recipe: str, acc: Accelerator) -> tuple[Path, Path | None, Tracker]:
    """Run folder, checkpoint to resume from, resolved config saved, tracker started."""
    run_dir = prepare_run_dir(cfg.output_dir, recipe, cfg.resume_from_checkpoint, cfg.overwrite, acc)
    resume_from = resolve_resume(run_dir, cfg.resume_from_checkpoint)
    if acc.is_main_process:
        save_config(cfg, run_dir / "config.yaml")
    tracker = Tracker(acc, run_dir, cfg.tracking, to_dict(cfg), run_name=run_dir.name)
    return run_dir, resume_from, tracker


def matryoshka_dims(cfg: LossConfig, model: SentenceTransformer) -> list[int]:
    """The loss's dimensions, checked against the model."""
    full = model.get_embedding_dimension()
    return resolve_dims(cfg.matryoshka_dims, full, flag="loss.matryoshka_dims") if cfg.matryoshka_dims else default_dims(full)


def evaluate_main(
    model: SentenceTransformer, data: BeirData | None, dims: list[int], cfg: EvalConfig, acc: Accelerator
) -> dict | None:
    """Evaluate on the main process (others wait); returns metrics there, None elsewhere or without data."""
    result = None
    if acc.is_main_process and data is not None:
        result = evaluate(model, data, dims, batch_size=cfg.batch_size)
    acc.wait_for_everyone()
    return result


def evaluate_base(
    model: SentenceTransformer, data: BeirData | None, dims: list[int], cfg: EvalConfig, acc: Accelerator, run_dir: Path
) -> dict | None:
    """:func:`evaluate_main` of the base model, kept in ``run_dir`` so a resumed run does not redo it."""
    path = run_dir / "eval_before.json"
    if path.is_file():
        return json.loads(path.read_text()) if acc.is_main_process else None
    result = evaluate_main(model, data, dims, cfg, acc)
    if result is not None:
        atomic_write_json(path, result)
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
) -> Path:
    """Write ``eval.json``, print the before/after table and export ``run_dir/final`` (main process)."""
    final = run_dir / "final"
    if acc.is_main_process:
        if before is not None and after is not None:
            atomic_write_json(
                run_dir / "eval.json",
                {"before": {**eval_meta, "metrics": before}, "after": {**eval_meta, "model": str(final), "metrics": after}},
            )
            print_table(before_after_table(before, after, title=title))
        export_model(model, final)
        print(f"saved {final}  (SentenceTransformer('{final}') loads it)")
    acc.wait_for_everyone()
    return final
