"""Contrastive fine-tuning from start to finish: the flow that the Matryoshka and LoRA recipes share.

Setup (accelerator, run folder, model, data, loss), evaluate the base model, train, evaluate
again, save. The recipes differ only in how the model is adapted before training and exported
after it, which they pass in as two functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sentence_transformers import SentenceTransformer

from trainer import run
from trainer.data.questions import question_set
from trainer.errors import CodetuneError
from trainer.loop import TrainConfig, Trainer, check_batches
from trainer.losses import MatryoshkaInfoNCE
from trainer.model_card import RunFacts, data_summary
from trainer.models import load_model
from trainer.models.layer_lr import check_layer_lr_decay
from trainer.models.memory import check_training_settings, prepare_for_training
from trainer.models.merge import interpolate, snapshot
from trainer.models.rotation import refit, rotate
from trainer.preemption import EXIT_PREEMPTED, Preempted, StopRequest
from trainer.run_folder import run_folder


@dataclass
class MergeConfig:
    # Weight of the tuned model when it is averaged with its base (WiSE-FT): final = base +
    # alpha * (tuned - base). 1: the tuned model as trained. Lower keeps more general search.
    alpha: float = 1.0


@dataclass
class FineTuneConfig(run.RunConfig):
    merge: MergeConfig = field(default_factory=MergeConfig)
    mixed_precision: str | None = None  # auto (bf16 where the hardware has it) | no | fp16 | bf16; None: as accelerate launch says
    train: TrainConfig = field(default_factory=TrainConfig)


Adapt = Callable[[SentenceTransformer], None]
Export = Callable[[SentenceTransformer, Path], SentenceTransformer]


def fine_tune(
    cfg: FineTuneConfig, recipe: str, adapt: Adapt | None = None, export: Export | None = None, check: Adapt | None = None,
) -> int:
    """Run one fine-tuning job; returns the process exit status.

    Args:
        cfg: the resolved recipe config.
        recipe: name used for the default run folder.
        adapt: changes the model in place before training (e.g. wraps it with LoRA).
        export: given the trained model and run folder, returns the model to save as ``final/``
            (e.g. with LoRA merged), after saving anything else it wants there.
        check: raises, at setup and changing nothing, the error ``adapt`` would raise after the
            base evaluation (e.g. a LoRA target that matches no module).
    """
    stop = StopRequest()  # a stop request during setup is honoured at the first step, not fatal
    # Setup: accelerator and model first, so that a bad name fails before any folder is touched.
    acc = run.make_accelerator(cfg.mixed_precision, cfg.tracking, cfg.train.seed, cfg.cpu_threads, cfg.collective_timeout_s)
    m = cfg.model
    if adapt is not None and cfg.merge.alpha != 1.0:
        raise CodetuneError(f"merge.alpha: {cfg.merge.alpha} applies to full fine-tuning; scale LoRA with lora.alpha instead")
    cfg.data.check_paths()
    model = load_model(m.name, m.preset, m.max_seq_length, m.trust_remote_code, device=str(acc.device))
    # Every knob that needs something of this model is checked here, before a minute of base evaluation.
    check_layer_lr_decay(model, cfg.train.layer_lr_decay)
    check_training_settings(model, m.gradient_checkpointing, m.freeze_embeddings, m.attention_dropout)
    if check is not None:
        check(model)
    dims = run.matryoshka_dims(cfg.loss, model)
    eval_dims = cfg.eval.dims or dims
    loss_fn = MatryoshkaInfoNCE(
        dims, cfg.loss.matryoshka_weights, cfg.loss.temperature, cfg.loss.gather_across_devices, cfg.loss.symmetric,
        cfg.loss.false_negative_margin, cfg.loss.same_type_negatives,
    )
    with run_folder(cfg.output_dir, recipe, cfg.resume_from_checkpoint, cfg.overwrite, acc) as run_dir:
        resume_from, tracker = run.start(cfg, run_dir, acc, recipe)
        data = run.load_data_once(cfg.data, run_dir, model, acc)
        eval_data = data.eval_data
        facts = RunFacts(recipe, cfg, data_summary(cfg.data, data, eval_data))
        tracker.log_data(facts.data)
        rows = data.train.to_list()
        check_batches(rows, cfg.train, acc.num_processes)  # before the base evaluation, not after it
        if cfg.tracking.log_examples:
            tracker.log_examples(rows[:16])

        # Evaluate the base model, adapt it, train, evaluate again.
        before = run.evaluate_base(model, eval_data, eval_dims, cfg.eval, acc, run_dir)
        if before and resume_from is None:
            run.log_eval(tracker, before, 0, "before")
        questions = {name: question_set(name) for name in cfg.eval.questions}
        before_q = run.evaluate_base(model, questions, eval_dims, cfg.eval, acc, run_dir, "eval_before_questions.json")
        if before_q and resume_from is None:
            for name, metrics in before_q.items():
                run.log_eval(tracker, metrics, 0, f"before/{name}")
        if m.pca_rotation:
            rotate(model, rows, acc, fit=resume_from is None, seed=cfg.train.seed)
        base = snapshot(model) if cfg.merge.alpha != 1.0 else None
        if adapt is not None:
            adapt(model)
        prepare_for_training(model, m.gradient_checkpointing, m.freeze_embeddings, m.attention_dropout)
        trainer = Trainer(model, rows, loss_fn, cfg.train, acc, run_dir, tracker, stop)
        try:
            steps = trainer.fit(resume_from)
        except Preempted as stop:
            acc.print(str(stop))
            tracker.finish()
            return EXIT_PREEMPTED
        if base is not None:
            interpolate(model, base, cfg.merge.alpha)
        if m.pca_refit:
            refit(model, rows, acc, seed=cfg.train.seed)
        after = run.evaluate_main(model, eval_data, eval_dims, cfg.eval, acc)
        if after:
            run.log_eval(tracker, after, steps, "after")
        after_q = run.evaluate_questions(model, questions, eval_dims, cfg.eval, acc)
        if after_q:
            for name, metrics in after_q.items():
                run.log_eval(tracker, metrics, steps, f"after/{name}")

        # Save: eval.json, the before/after table, run_dir/final.
        final_model = export(model, run_dir) if export is not None and acc.is_main_process else model
        meta = {"model": m.name, "data": str(data.eval_dir), "split": data.eval_split}
        if eval_data is not None:
            meta["data_fingerprint"] = eval_data.fingerprint()
        run.finish(
            final_model, run_dir, before, after, meta, acc, f"{recipe} {m.name}: held-out code retrieval", facts, tracker,
            (before_q, after_q) if after_q else None,
        )
        tracker.finish()
    return 0
