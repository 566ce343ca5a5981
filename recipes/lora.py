"""LoRA fine-tuning with InfoNCE under a Matryoshka objective.

    accelerate launch recipes/lora.py
    accelerate launch recipes/lora.py --config recipes/configs/lora.yaml lora.rank=16 output_dir=runs/lora

Method: as recipes/matryoshka.py, but the encoder is frozen and low-rank adapters on its linear
layers are trained (Hu et al., 2021): a few percent of the parameters and of the optimizer
memory. The run saves the adapter alone (run_dir/adapter) and a merged, standalone
sentence-transformers model (run_dir/final). main() below is the method, step by step; the
boilerplate around it (run folder, data, before/after evaluation, export) is trainer/session.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

# From a checkout, trainer/ may not be installed. Installed, this file is trainer/recipes/NAME.py,
# and trainer/ itself must not go on sys.path (its modules would shadow packages such as `evaluate`).
if (Path(__file__).resolve().parents[1] / "trainer").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.preemption import StopRequest  # noqa: E402

StopRequest()  # watch for SIGUSR1 from the first moment: the imports below take seconds

from trainer.config import load_config, refuse_unused  # noqa: E402
from trainer.errors import cli_main  # noqa: E402
from trainer.losses import MatryoshkaInfoNCE  # noqa: E402
from trainer.models import load_model  # noqa: E402
from trainer.models.lora import LoraSettings, apply_lora, lora_targets, merge_lora, save_adapter  # noqa: E402
from trainer.models.memory import check_training_settings, prepare_for_training  # noqa: E402
from trainer.models.rotation import refit, rotate  # noqa: E402
from trainer.preemption import EXIT_PREEMPTED  # noqa: E402
from trainer.run import matryoshka_dims  # noqa: E402
from trainer.session import FineTuneConfig, Session  # noqa: E402

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "lora.yaml"

# Settings this recipe shares with full fine-tuning but has no use for: one-line errors, not no-ops.
UNUSED = {
    "merge.alpha": "WiSE-FT merging is for full fine-tuning; scale LoRA's update with lora.alpha instead",
    "model.freeze_embeddings": "LoRA trains its adapters alone; the token embeddings are frozen already",
}


@dataclass
class LoraRecipeConfig(FineTuneConfig):
    lora: LoraSettings = field(default_factory=LoraSettings)


def config(argv: list[str] | None = None) -> LoraRecipeConfig:
    """The resolved config: defaults, then the YAML (``--config`` or the shipped one), then ``key=value`` overrides;
    a setting of :data:`UNUSED` fails."""
    return refuse_unused(load_config(LoraRecipeConfig, argv, DEFAULT_CONFIG), "lora", UNUSED)


def main(argv: list[str] | None = None) -> int:
    cfg = config(argv)
    session = Session(cfg, "lora")  # accelerator, seed + rank; a bad data path fails here
    model = load_model(cfg.model, device=session.device)
    # What needs this model is checked now, before a minute of base evaluation.
    check_training_settings(model, cfg.model)
    lora_targets(model, cfg.lora)  # a target that matches no module fails here, not as a peft traceback
    loss_fn = MatryoshkaInfoNCE.from_config(cfg.loss, matryoshka_dims(cfg.loss, model))
    with session.run(model, loss_fn.dims) as rows:  # run folder, tracker, data once, base evaluation
        with session.phase("prepare"):
            if cfg.model.pca_rotation:  # rotate: truncated prefixes start from the principal axes
                rotate(model, rows, session.acc, fit=session.resume_from is None, seed=cfg.train.seed)
            trainable, total = apply_lora(model, cfg.lora)  # adapt: low-rank adapters; the encoder is frozen
            print(f"LoRA: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")
            prepare_for_training(model, cfg.model)
        teacher = session.teacher(rows)  # distil: a stronger model's embeddings of every training text, once (or None)
        steps = session.fit(model, rows, loss_fn, teacher)  # fit: the adapters alone
        if steps is None:
            return EXIT_PREEMPTED  # stopped on request after a checkpoint: requeue the same command
        if cfg.model.pca_refit:  # refit: re-sort the coordinates along the tuned model's own axes
            with session.phase("merge"):
                refit(model, rows, session.acc, seed=cfg.train.seed)
        session.evaluate(model, steps)  # the held-out split and eval.questions, after
        with session.phase("export"):
            if session.acc.is_main_process:  # export: the adapter alone, then merged into the weights
                save_adapter(model, session.run_dir / "adapter")
                model = merge_lora(model)
        session.finish(model)  # final/, eval.json, tables, model cards
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
