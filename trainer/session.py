"""One fine-tuning run's boilerplate, in one object, so that a recipe's file shows its method alone.

    session = Session(cfg, "matryoshka")          # accelerator (seeded per process), data paths checked
    model = load_model(cfg.model, device=session.device)
    with session.run(model, dims) as rows:         # run folder, config, tracker; data once (memory-mapped); base evaluation
        ...                                        # the recipe's method: rotate, adapt, fit, merge, ...
        teacher = session.teacher(rows)            # loss.teacher's embeddings of the rows, or None
        steps = session.fit(model, rows, loss_fn, teacher)  # the training loop; None when stopped on request
        session.evaluate(model, steps)             # the held-out split and eval.questions, after
        session.finish(model)                      # eval.json, tables, final/, model cards, hub
                                                   # (leaving run(): the phase table, timing.json)

What happens once (the data, the base evaluation, the export) happens inside, at these few points.
Each of them is a timed phase (setup, data, base_eval, teacher, training, final_eval, export); a recipe
times the steps of its own method with ``session.phase(name)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import datasets
from sentence_transformers import SentenceTransformer

from trainer import run
from trainer.data import shared
from trainer.data.batches import check_batches
from trainer.data.questions import question_set
from trainer.loop import TrainConfig, Trainer
from trainer.losses import MatryoshkaInfoNCE
from trainer.model_card import RunFacts, data_summary
from trainer.models.merge import MergeConfig
from trainer.preemption import Preempted, StopRequest
from trainer.rows import Rows, take
from trainer.run_folder import run_folder
from trainer.teacher import Teacher, load_teacher
from trainer.timing import Phases


@dataclass
class FineTuneConfig(run.RunConfig):
    """What the fine-tuning recipes share: a run, how the tuned model is merged, precision and the loop."""

    merge: MergeConfig = field(default_factory=MergeConfig)
    mixed_precision: str | None = None  # auto (bf16 where the hardware has it) | no | fp16 | bf16; None: as accelerate launch says
    train: TrainConfig = field(default_factory=TrainConfig)


class Session:
    """A fine-tuning run around a recipe's method: start, data, before and after, finish.

    Attributes set by :meth:`run`: ``run_dir``, ``resume_from`` (a checkpoint, or None),
    ``tracker``, ``data`` and ``before`` (the base model's metrics, on the main process).
    ``timing``: wall seconds per phase, from the session's start (setup) to the end of :meth:`run`.
    """

    def __init__(self, cfg: FineTuneConfig, recipe: str):
        self.timing = Phases()  # first: setup is timed from here to the data
        self.step = 0  # the last training step done, for the timing record
        self.stop = StopRequest()  # a stop request during setup is honoured at the first step, not fatal
        self.cfg, self.recipe = cfg, recipe
        # The accelerator before the model, and both before the run folder: a bad name fails
        # before any folder is touched.
        self.acc = run.make_accelerator(cfg.mixed_precision, cfg.tracking, cfg.train.seed, cfg.cpu_threads, cfg.collective_timeout_s)
        cfg.data.check_paths()

    @property
    def device(self) -> str:
        return str(self.acc.device)

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Time the body as the phase ``name`` of this run's timing table."""
        return self.timing.phase(name)

    @contextmanager
    def run(self, model: SentenceTransformer, dims: list[int]) -> Iterator[datasets.Dataset]:
        """The training rows, inside the run folder, once the base model is evaluated.

        The rows are a memory-mapped dataset (``run_dir/data/train``): read a batch or a column at a
        time, never all into Python (:mod:`trainer.rows`).
        ``dims``: the loss's Matryoshka dimensions, evaluated unless ``eval.dims`` names others.
        """
        cfg, acc = self.cfg, self.acc
        self.eval_dims = cfg.eval.dims or dims
        with run_folder(cfg.output_dir, self.recipe, cfg.resume_from_checkpoint, cfg.overwrite, acc) as run_dir:
            self.run_dir = run_dir
            self.resume_from, self.tracker = run.start(cfg, run_dir, acc, self.recipe)
            self.timing.add("setup", self.timing.elapsed())
            with self.phase("data"):
                self.data = shared.load_data_once(cfg.data, run_dir, model, acc)
                self.facts = RunFacts(self.recipe, cfg, data_summary(cfg.data, self.data, self.data.eval_data))
                self.tracker.log_data(self.facts.data)
                rows = self.data.train
                check_batches(rows, cfg.train, acc.num_processes)  # before the base evaluation, not after it
                if cfg.tracking.log_examples:
                    self.tracker.log_examples(take(rows, range(min(16, len(rows)))))
            with self.phase("base_eval"):
                self._evaluate_base(model)
            yield rows
            # Also when stopped on request: a resumed run then reports the phases it ran itself.
            self.timing.report(run_dir, self.tracker, self.step, acc.is_main_process)
            self.tracker.finish()

    def _evaluate_base(self, model: SentenceTransformer) -> None:
        """The base model on the held-out split and on each ``eval.questions`` set (kept for a resume)."""
        cfg, acc, fresh = self.cfg, self.acc, self.resume_from is None
        self.before = run.evaluate_base(model, self.data.eval_data, self.eval_dims, cfg.eval, acc, self.run_dir)
        if self.before and fresh:
            run.log_eval(self.tracker, self.before, 0, "before")
        self.questions = {name: question_set(name) for name in cfg.eval.questions}
        self.before_q = run.evaluate_base(model, self.questions, self.eval_dims, cfg.eval, acc, self.run_dir,
                                          "eval_before_questions.json")
        if self.before_q and fresh:
            for name, metrics in self.before_q.items():
                run.log_eval(self.tracker, metrics, 0, f"before/{name}")

    def teacher(self, rows: Rows) -> Teacher | None:
        """``loss.teacher``'s embeddings of every text of ``rows`` (a timed phase), or None without a teacher."""
        cfg = self.cfg
        if not cfg.loss.teacher:
            return None
        with self.phase("teacher"):
            return load_teacher(cfg.loss.teacher, rows, self.acc, cfg.model.max_seq_length)

    def fit(self, model: SentenceTransformer, rows: Rows, loss_fn: MatryoshkaInfoNCE, teacher: Teacher | None = None) -> int | None:
        """Train (from the checkpoint to resume, if any); the steps done, or None when stopped on request after a checkpoint.

        ``teacher``: its embeddings of the rows' texts become part of the loss's target (``loss.teacher``).
        """
        with self.phase("training"):
            trainer = Trainer(model, rows, loss_fn, self.cfg.train, self.acc, self.run_dir, self.tracker, self.stop, teacher)
            try:
                self.step = trainer.fit(self.resume_from)
                return self.step
            except Preempted as stop:
                self.acc.print(str(stop))
                self.step = stop.step
                return None

    def evaluate(self, model: SentenceTransformer, steps: int) -> None:
        """The tuned model on what the base model was scored on, logged at ``steps``."""
        cfg, acc = self.cfg, self.acc
        with self.phase("final_eval"):
            self.after = run.evaluate_main(model, self.data.eval_data, self.eval_dims, cfg.eval, acc)
            self.after_q = run.evaluate_questions(model, self.questions, self.eval_dims, cfg.eval, acc)
        if self.after:
            run.log_eval(self.tracker, self.after, steps, "after")
        if self.after_q:
            for name, metrics in self.after_q.items():
                run.log_eval(self.tracker, metrics, steps, f"after/{name}")

    def finish(self, model: SentenceTransformer) -> None:
        """Save ``model`` as ``final/``: eval.json, the before/after tables, model cards, W&B, the hub."""
        data, name = self.data, self.cfg.model.name
        meta = {"model": name, "data": str(data.eval_dir), "split": data.eval_split}
        if data.eval_data is not None:
            meta["data_fingerprint"] = data.eval_data.fingerprint()
        questions = (self.before_q, self.after_q) if self.after_q else None
        with self.phase("export"):
            run.finish(model, self.run_dir, self.before, self.after, meta, self.acc, f"{self.recipe} {name}: held-out code retrieval",
                       self.facts, self.tracker, questions)
