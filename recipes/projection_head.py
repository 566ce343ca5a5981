"""A query-only linear head over a frozen encoder: the cheap baseline.

    python recipes/projection_head.py
    python recipes/projection_head.py --config recipes/configs/projection_head.yaml head.rank=32 output_dir=runs/head

Method: the encoder stays frozen. Training queries and their code are encoded once and cached on
disk (keyed by the model's weights and the texts, reused across runs). A linear map on the query
side only, starting at the identity, is trained with InfoNCE on the cached embeddings, in
seconds. Documents are untouched, so an index built with the base model stays valid. The result
is a sentence-transformers model whose query route applies the head (a Router). It is scored
before and after on the held-out split and on ``eval.questions``, as the fine-tuning recipes are.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# From a checkout, trainer/ may not be installed. Installed, this file is trainer/recipes/NAME.py,
# and trainer/ itself must not go on sys.path (its modules would shadow packages such as `evaluate`).
if (Path(__file__).resolve().parents[1] / "trainer").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.preemption import EXIT_PREEMPTED, StopRequest  # noqa: E402

StopRequest()  # watch for SIGUSR1 from the first moment: the imports below take seconds

from trainer import run  # noqa: E402
from trainer.config import load_config, refuse_unused  # noqa: E402
from trainer.data import shared  # noqa: E402
from trainer.data.questions import question_set  # noqa: E402
from trainer.embedding_cache import cached_encode  # noqa: E402
from trainer.errors import CodetuneError, cli_main  # noqa: E402
from trainer.evaluator import encode_corpus  # noqa: E402
from trainer.losses import MatryoshkaInfoNCE  # noqa: E402
from trainer.model_card import RunFacts, data_summary  # noqa: E402
from trainer.models import load_model  # noqa: E402
from trainer.models.projection import QueryHead, fit_query_head, with_query_head  # noqa: E402
from trainer.retrieval import check_compute, resolve_compute  # noqa: E402
from trainer.rows import take  # noqa: E402
from trainer.run_folder import run_folder  # noqa: E402
from trainer.sampler import text_keys  # noqa: E402
from trainer.timing import Phases  # noqa: E402

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "projection_head.yaml"

# Settings this recipe shares with the fine-tuning recipes but has no use for: one-line errors, not no-ops.
UNUSED = {
    "model.gradient_checkpointing": "the encoder is frozen: it encodes once and never trains",
    "model.freeze_embeddings": "the encoder is frozen whole",
    "model.freeze_layers": "the encoder is frozen whole",
    "model.attention_dropout": "the encoder is frozen: it encodes once and never trains",
    "model.hidden_dropout": "the encoder is frozen: it encodes once and never trains",
    "model.pca_rotation": "the head trains on the base model's embeddings as they are",
    "model.pca_refit": "the head trains on the base model's embeddings as they are",
    "data.hard_negatives": "the head trains on in-batch negatives alone",
    "data.hard_negatives_window": "the head trains on in-batch negatives alone",
    "loss.gather_across_devices": "the head trains in one process",
    "loss.symmetric": "the head's InfoNCE runs from queries to documents only",
    "loss.teacher": "the head learns from its pairs alone (distillation trains the encoder: matryoshka.py, lora.py)",
}


@dataclass
class HeadSettings:
    rank: int = 0  # 0: full D x D matrix; r > 0: identity + rank-r update (fewer parameters)
    epochs: int = 10
    batch_size: int = 256  # in-batch negatives per query: larger is harder, and cheap here
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    seed: int = 0
    # How the training rows are encoded, once: auto is bf16 autocast where the hardware has bf16
    # units (2.6x fp32's texts/s on this CPU, cosine to fp32 >= 0.9999), else fp32. Evaluation stays fp32.
    compute: str = "auto"

    def __post_init__(self) -> None:
        for name in ("rank", "weight_decay"):
            if getattr(self, name) < 0:
                raise CodetuneError(f"head.{name}: {getattr(self, name)} must be 0 or more")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise CodetuneError(f"head.{name}: {getattr(self, name)} must be at least 1")
        if not self.lr > 0:
            raise CodetuneError(f"head.lr: {self.lr} must be above 0")
        check_compute(self.compute, "head.compute")


@dataclass
class ProjectionHeadConfig(run.RunConfig):
    head: HeadSettings = field(default_factory=HeadSettings)


def config(argv: list[str] | None = None) -> ProjectionHeadConfig:
    """The resolved config: defaults, then the YAML (``--config`` or the shipped one), then ``key=value`` overrides;
    a setting of :data:`UNUSED` fails."""
    return refuse_unused(load_config(ProjectionHeadConfig, argv, DEFAULT_CONFIG), "projection_head", UNUSED)


def main(argv: list[str] | None = None) -> int:
    cfg = config(argv)
    phases = Phases()  # wall seconds per phase, printed at the end; setup is timed from here

    # Setup: one process (the head trains in seconds), the frozen encoder, then the run folder and data.
    acc = run.make_accelerator(None, cfg.tracking, cfg.head.seed, cfg.cpu_threads, cfg.collective_timeout_s)
    if acc.num_processes > 1:
        raise CodetuneError("projection_head: runs in one process; launch it without --num_processes")
    m = cfg.model
    cfg.data.check_paths()
    base = load_model(cfg.model, device=str(acc.device)).eval()
    dims = run.matryoshka_dims(cfg.loss, base)
    loss_fn = MatryoshkaInfoNCE(dims, cfg.loss.matryoshka_weights, cfg.loss.temperature, gather=False)  # one process
    with run_folder(cfg.output_dir, "projection_head", cfg.resume_from_checkpoint, cfg.overwrite, acc) as run_dir:
        _, tracker = run.start(cfg, run_dir, acc, "projection_head")
        phases.add("setup", phases.elapsed())
        with phases.phase("data"):
            data = shared.load_data_once(cfg.data, run_dir, base, acc)
            eval_data = data.eval_data
            facts = RunFacts("projection_head", cfg, data_summary(cfg.data, data, eval_data))
            tracker.log_data(facts.data)
            rows = data.train  # memory-mapped: the head needs every row's embeddings, not its dicts
            if cfg.tracking.log_examples:
                tracker.log_examples(take(rows, range(min(16, len(rows)))))

        # Encode once (cached across runs), then train the head on the cached embeddings. The head
        # leaves documents as the base encodes them: each evaluation corpus (the held-out split,
        # each eval.questions set) is encoded once, for before and after.
        eval_dims = cfg.eval.dims or dims
        with phases.phase("base_eval"):
            corpus = encode_corpus(base, eval_data, cfg.eval.batch_size) if eval_data is not None else None
            before = run.evaluate_main(base, eval_data, eval_dims, cfg.eval, acc, corpus)
            questions = {name: question_set(name) for name in cfg.eval.questions}
            corpora = {name: encode_corpus(base, q, cfg.eval.batch_size) for name, q in questions.items()}
            before_q = {name: run.evaluate_main(base, q, eval_dims, cfg.eval, acc, corpora[name]) for name, q in questions.items()}
        if StopRequest().requested():  # the head trains in seconds: nothing worth a checkpoint yet
            tracker.finish()
            print("stopped on request before the head was trained; nothing to save: rerun the same command")
            return EXIT_PREEMPTED
        h = cfg.head
        with phases.phase("training"):  # the training rows' encoding (or cache read) included
            compute = resolve_compute(cfg.head.compute)
            queries, hit_q = cached_encode(base, list(rows["query"]), "query", cfg.eval.batch_size, compute)  # (N, D)
            positives, hit_p = cached_encode(base, list(rows["positive"]), "document", cfg.eval.batch_size, compute)
            print(f"embeddings: {'from cache' if hit_q and hit_p else 'encoded and cached'}")
            head = QueryHead(queries.shape[1], cfg.head.rank)
            t0 = time.perf_counter()
            curve = fit_query_head(head, queries, positives, text_keys(rows, 0), loss_fn, h.epochs, h.batch_size, h.lr, h.weight_decay, h.seed)
            seconds = time.perf_counter() - t0
        print(f"head trained in {seconds:.1f} s: loss {curve[0]:.4f} -> {curve[-1]:.4f} over {h.epochs} epochs")
        for epoch, loss in enumerate(curve, 1):
            tracker.log({"loss": loss, "head_train_seconds": seconds}, epoch)

        # Evaluate the exported model (its Router routes queries through the head), save.
        model = with_query_head(base, head)
        with phases.phase("final_eval"):
            after = run.evaluate_main(model, eval_data, eval_dims, cfg.eval, acc, corpus)
            after_q = {name: run.evaluate_main(model, q, eval_dims, cfg.eval, acc, corpora[name]) for name, q in questions.items()}
        for tag, metrics in (("before", before), ("after", after)):
            if metrics:
                run.log_eval(tracker, metrics, 0 if tag == "before" else h.epochs, tag)
        for name in questions:
            run.log_eval(tracker, before_q[name], 0, f"before/{name}")
            run.log_eval(tracker, after_q[name], h.epochs, f"after/{name}")
        meta = {"model": m.name, "data": str(data.eval_dir), "split": data.eval_split}
        if eval_data is not None:
            meta["data_fingerprint"] = eval_data.fingerprint()
        with phases.phase("export"):
            run.finish(model, run_dir, before, after, meta, acc, f"projection head on {m.name}: held-out code retrieval", facts,
                       tracker, (before_q, after_q) if questions else None)
        phases.report(run_dir, tracker, h.epochs, acc.is_main_process)
        tracker.finish()
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
