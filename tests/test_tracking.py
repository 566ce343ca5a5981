"""What reaches W&B: each step once across a resume; a W&B that cannot start costs one warning, not the run."""

import json
import warnings

import pytest
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from trainer.tracking import Tracker, TrackingConfig


@pytest.fixture
def accelerator():
    import wandb

    acc = Accelerator(log_with="wandb")
    yield acc
    AcceleratorState._reset_state(reset_partial_state=True)
    wandb.teardown()  # W&B reads its environment once per process: the next test sets its own


def spy_on_wandb(acc: Accelerator) -> list[int]:
    """Steps the tracker hands to W&B, in order (the real W&B still gets each call)."""
    sent, real = [], acc.log

    def log(values, step=None, **kwargs):
        sent.append(step)
        real(values, step=step, **kwargs)

    acc.log = log
    return sent


def logged_steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_a_resumed_run_sends_each_step_to_wandb_once(accelerator, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = TrackingConfig(wandb="offline")
    first = Tracker(accelerator, tmp_path, cfg, {"lr": 1e-3}, run_name="run")
    sent = spy_on_wandb(accelerator)
    for step in range(1, 6):  # checkpoint at 3, killed after step 5 was logged
        first.log({"loss": 1.0 / step}, step)
    first.finish()

    resumed = Tracker(accelerator, tmp_path, cfg, {"lr": 1e-3}, run_name="run")
    resumed.rewind(3)
    for step in range(4, 9):  # 4 and 5 again (bit-identical: resume is exact), then new steps
        resumed.log({"loss": 1.0 / step}, step)
    resumed.finish()

    assert sent == [1, 2, 3, 4, 5, 6, 7, 8]
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6, 7, 8]
    # Both processes wrote to one W&B run: the id made on the first start was reused.
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    run_id = (tmp_path / "wandb" / "codetune-run-id").read_text()
    assert len(runs) >= 2 and all(f"-{run_id}" in r.name for r in runs)


def test_wandb_that_cannot_start_costs_one_warning_not_the_run(accelerator, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a well-formed key no server knows
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker(accelerator, tmp_path, TrackingConfig(wandb="online"), {}, run_name="run")
        for step in range(1, 4):
            tracker.log({"loss": 1.0}, step)
        tracker.finish()
    ours = [w for w in caught if "W&B" in str(w.message)]
    assert len(ours) == 1 and "could not start" in str(ours[0].message) and "training goes on" in str(ours[0].message)
    assert logged_steps(tmp_path) == [1, 2, 3]
