"""Run the training loop for a few steps and dump what it did; launched by tests with `accelerate launch`.

    accelerate launch --cpu --num_processes 2 tests/train_worker.py MODEL_DIR OUT_DIR key=value...

Writes OUT_DIR/weights.pt (the model's state dict, from rank 0) and OUT_DIR/log.jsonl.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import run  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.data.beir import load_beir  # noqa: E402
from trainer.loop import TrainConfig, Trainer  # noqa: E402
from trainer.losses import MatryoshkaInfoNCE  # noqa: E402
from trainer.models import load_model  # noqa: E402
from trainer.preemption import EXIT_PREEMPTED, Preempted  # noqa: E402
from trainer.run_folder import run_folder  # noqa: E402
from trainer.teacher import load_teacher  # noqa: E402
from trainer.tracking import TrackingConfig  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "beir_code"


@dataclass
class WorkerConfig:
    output_dir: str | None = None
    overwrite: bool = False
    cpu_threads: int | None = 1  # 1 and 2 processes add floats in the same order
    resume_from_checkpoint: str | None = None
    preset: str = "bge"
    dims: list[int] = field(default_factory=lambda: [32, 16])
    gather: bool = True
    symmetric: bool = False
    teacher: str | None = None  # a model folder whose scores join the target (loss.teacher), at weight 0.5
    poison_step: int = 0  # >0: the loss turns NaN on this step, to test the divergence guard
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(wandb="disabled"))


def fixture_rows(with_negatives: int = 0) -> list[dict]:
    data = load_beir(FIXTURE)
    rows = [{"query": data.queries[q], "positive": data.document_text(next(iter(d)))} for q, d in data.relevant().items()]
    if with_negatives:
        docs = list(data.corpus)
        for i, row in enumerate(rows):
            row["negatives"] = [data.document_text(docs[(7 * i + j + 1) % len(docs)]) for j in range(with_negatives)]
    return rows


def poisoned(loss_fn, call: int):
    """``loss_fn`` whose ``call``-th result is NaN."""
    calls = [0]

    def wrapped(*args):
        calls[0] += 1
        loss, per_dim = loss_fn(*args)
        return (loss * float("nan"), per_dim) if calls[0] == call else (loss, per_dim)

    return wrapped


def main() -> None:  # noqa: D103
    model_dir = sys.argv[1]
    cfg = load_config(WorkerConfig, sys.argv[2:])
    acc = run.make_accelerator(None, cfg.tracking, cfg.train.seed, cfg.cpu_threads)
    with run_folder(cfg.output_dir, "worker", cfg.resume_from_checkpoint, cfg.overwrite, acc) as run_dir:
        resume_from, tracker = run.start(cfg, run_dir, acc)
        model = load_model(model_dir, cfg.preset, device=str(acc.device))
        loss_fn = MatryoshkaInfoNCE(cfg.dims, temperature=0.05, gather=cfg.gather, symmetric=cfg.symmetric,
                                    teacher_weight=0.5 if cfg.teacher else 0.0)
        if cfg.poison_step:
            loss_fn = poisoned(loss_fn, cfg.poison_step * cfg.train.gradient_accumulation_steps)
        rows = fixture_rows(cfg.train.hard_negatives)
        teacher = load_teacher(cfg.teacher, rows, acc, 64) if cfg.teacher else None
        trainer = Trainer(model, rows, loss_fn, cfg.train, acc, run_dir, tracker, teacher=teacher)
        try:
            trainer.fit(resume_from)
        except Preempted:
            sys.exit(EXIT_PREEMPTED)
        if acc.is_main_process:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, run_dir / "weights.pt")
        acc.wait_for_everyone()


if __name__ == "__main__":
    main()
