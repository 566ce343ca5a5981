"""Where a run's time goes: wall seconds per phase, reported once at the end of the run.

    phases = Phases()                       # the clock starts: setup is timed from here
    ...                                     # accelerator, model
    phases.add("setup", phases.elapsed())
    with phases.phase("training"):
        ...
    phases.report(run_dir, tracker, step, main)   # timing.json, a log.jsonl record, the W&B summary, a table

The recipes' phases, in order (a phase a run does not have is left out):

    setup       accelerator, model load, run folder, tracker (the imports before them are not counted)
    data        reading or mining, split, hard negatives
    base_eval   the base model on the held-out split and eval.questions (or its scores from the cache)
    prepare     the method's steps before training: PCA rotation, adapters
    teacher     loss.teacher's embeddings of every training text (or them from the cache)
    training    the loop (a head's training rows encoded included)
    merge       the method's steps after training: WiSE-FT interpolation, PCA refit
    final_eval  the tuned model on what the base model was scored on
    export      eval.json, tables, final/ (and a LoRA adapter), model cards, W&B artifact, hub

Every process keeps its own clock and sends nothing to the others (no collective); the main
process reports, so a phase's seconds include its waits on the other processes. A phase entered
twice (a LoRA run exports its adapter, then the merged model) adds up. A resumed run reports the
phases it ran itself; ``log.jsonl`` keeps one record per process that reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer.fileio import atomic_write_json
from trainer.tables import phase_table, print_table
from trainer.tracking import Tracker

PREFIX = "seconds/"  # log.jsonl and W&B keys: seconds/setup, seconds/training, ...


class Phases:
    """Wall seconds per named phase, in the order the phases first ran."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def elapsed(self) -> float:
        """Seconds since this clock started."""
        return time.perf_counter() - self.started

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as ``name`` (added to the phase's earlier seconds, if any)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def report(self, run_dir: Path, tracker: Tracker, step: int, main: bool) -> None:
        """On the main process: ``run_dir/timing.json``, one ``log.jsonl`` record at ``step``, the W&B summary, a table."""
        if not main:
            return
        record = {f"{PREFIX}{name}": s for name, s in self.seconds.items()}
        atomic_write_json(run_dir / "timing.json", {"step": step, "seconds": self.seconds})
        tracker.log_summary(record, step)
        print_table(phase_table(self.seconds, title="where the time went"))


def record_seconds(record: dict) -> dict[str, float]:
    """``{phase: seconds}`` from a ``log.jsonl`` record (its ``seconds/<phase>`` keys)."""
    return {key.removeprefix(PREFIX): v for key, v in record.items() if key.startswith(PREFIX)}
