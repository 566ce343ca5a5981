"""Where a run's time goes: each phase timed on the main process, reported once at the end."""

import io
import json
import time

import pytest
from rich.console import Console
from test_recipes import pairs, run_recipe  # noqa: F401 -- the fixture is used by name

from trainer.tables import phase_table
from trainer.timing import Phases, record_seconds


def test_a_phase_entered_twice_adds_up_and_the_table_totals_the_phases():
    phases = Phases()
    for name in ("export", "training", "export"):
        with phases.phase(name):
            pass
    assert list(phases.seconds) == ["export", "training"]  # the order the phases first ran
    phases.seconds = {"export": 1.0, "training": 3.0}
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(phase_table(phases.seconds))
    rows = [line.replace("│", " ").split() for line in console.export_text().splitlines() if "%" in line]
    assert rows == [["export", "1.0", "25%"], ["training", "3.0", "75%"], ["total", "4.0", "100%"]]
    assert record_seconds({"step": 6, "loss": 0.5, "seconds/training": 3.0}) == {"training": 3.0}


@pytest.mark.slow
def test_a_run_records_the_wall_seconds_of_every_phase(tiny_bert, pairs, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    t0 = time.perf_counter()
    proc = run_recipe("matryoshka.py", tiny_bert, "bge", out, pairs, "tracking.wandb=offline")
    wall = time.perf_counter() - t0  # the launcher, the interpreter and the imports included
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    (record,) = [r for r in log if record_seconds(r)]  # one record, at the last step
    seconds = record_seconds(record)
    # The shipped config rotates before training (prepare), and interpolates and refits after it (merge).
    assert list(seconds) == ["setup", "data", "base_eval", "prepare", "training", "merge", "final_eval", "export"]
    assert all(s > 0 for s in seconds.values()) and sum(seconds.values()) <= wall
    assert record["step"] == 6
    assert json.loads((out / "timing.json").read_text()) == {"step": 6, "seconds": seconds}
    assert "where the time went" in proc.stdout and "final_eval" in proc.stdout  # the table, after the results
    # The W&B run's summary has them too (keys are stored as plain text in the offline record).
    (wandb_record,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"seconds/final_eval" in wandb_record.read_bytes()
