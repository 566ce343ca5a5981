"""Full fine-tuning with InfoNCE under a Matryoshka objective.

    accelerate launch recipes/matryoshka.py                                  # embedded default, stdlib data
    accelerate launch recipes/matryoshka.py --config recipes/configs/bge.yaml train.lr=1e-5
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 recipes/matryoshka.py output_dir=runs/x
    accelerate launch recipes/matryoshka.py output_dir=runs/x resume_from_checkpoint=latest

Method: queries (docstring summaries) and code are embedded by one encoder; each query's code is
its positive, and every other document of the global batch (all processes), plus mined hard
negatives, is a negative. The InfoNCE loss is summed over truncated, re-normalised prefixes of
the embedding, so 256/128/64-dim embeddings stay good. The encoder is scored before and after
training on functions from held-out files. main() below is the method, step by step; the
boilerplate around it (run folder, data, before/after evaluation, export) is trainer/session.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

# From a checkout, trainer/ may not be installed. Installed, this file is trainer/recipes/NAME.py,
# and trainer/ itself must not go on sys.path (its modules would shadow packages such as `evaluate`).
if (Path(__file__).resolve().parents[1] / "trainer").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.preemption import StopRequest  # noqa: E402

StopRequest()  # watch for SIGUSR1 from the first moment: the imports below take seconds

from trainer.config import load_config  # noqa: E402
from trainer.errors import cli_main  # noqa: E402
from trainer.losses import MatryoshkaInfoNCE  # noqa: E402
from trainer.models import load_model  # noqa: E402
from trainer.models.memory import check_training_settings, prepare_for_training  # noqa: E402
from trainer.models.merge import interpolate, snapshot  # noqa: E402
from trainer.models.rotation import refit, rotate  # noqa: E402
from trainer.preemption import EXIT_PREEMPTED  # noqa: E402
from trainer.run import matryoshka_dims  # noqa: E402
from trainer.session import FineTuneConfig, Session  # noqa: E402

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "matryoshka.yaml"


def config(argv: list[str] | None = None) -> FineTuneConfig:
    """The resolved config: defaults, then the YAML (``--config`` or the shipped one), then ``key=value`` overrides."""
    return load_config(FineTuneConfig, argv, DEFAULT_CONFIG)


def main(argv: list[str] | None = None) -> int:
    cfg = config(argv)
    session = Session(cfg, "matryoshka")  # accelerator, seed + rank; a bad data path fails here
    model = load_model(cfg.model, device=session.device)
    # What needs this model is checked now, before a minute of base evaluation.
    check_training_settings(model, cfg.model)
    loss_fn = MatryoshkaInfoNCE.from_config(cfg.loss, matryoshka_dims(cfg.loss, model))
    with session.run(model, loss_fn.dims) as rows:  # run folder, tracker, data once, base evaluation
        with session.phase("prepare"):
            if cfg.model.pca_rotation:  # rotate: truncated prefixes start from the principal axes
                rotate(model, rows, session.acc, fit=session.resume_from is None, seed=cfg.train.seed)
            base = snapshot(model) if cfg.merge.alpha != 1.0 else None
            prepare_for_training(model, cfg.model)
        teacher = session.teacher(rows)  # distil: a stronger model's embeddings of every training text, once (or None)
        steps = session.fit(model, rows, loss_fn, teacher)  # fit: every weight, InfoNCE on each truncated prefix
        if steps is None:
            return EXIT_PREEMPTED  # stopped on request after a checkpoint: requeue the same command
        with session.phase("merge"):
            if base is not None:  # interpolate (WiSE-FT): base + alpha * (tuned - base)
                interpolate(model, base, cfg.merge.alpha)
            if cfg.model.pca_refit:  # refit: re-sort the coordinates along the tuned model's own axes
                refit(model, rows, session.acc, seed=cfg.train.seed)
        session.evaluate(model, steps)  # the held-out split and eval.questions, after
        session.finish(model)  # export: final/, eval.json, tables, model card
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
