"""What a run reports: W&B through accelerate's trackers (offline without a key), a JSONL log, a progress bar.

Only numbers are logged. Code and queries stay out of W&B (codebases are private) unless the user
opts in with ``tracking.log_examples``.

W&B is a view, ``log.jsonl`` the record: if W&B cannot start or fails mid-run (a bad key, no
network), the run goes on with one warning and the JSONL log stays complete. A resumed run
continues the same W&B run (its id is kept in the run folder) and sends it only steps it has not
had: resume is exact, so the steps replayed after the checkpoint carry the values already sent.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from tqdm.auto import tqdm

from trainer.fileio import atomic_write_text


@dataclass
class TrackingConfig:
    project: str = "codetune"  # W&B project
    wandb: str = "auto"  # auto: online with an API key, else offline (sync later: `wandb sync DIR`); or online|offline|disabled
    log_examples: bool = False  # send a few training (query, code) pairs to W&B; off: code is private


def wandb_mode(setting: str) -> str:
    """Resolve ``auto`` to ``online`` when W&B credentials exist, else ``offline``."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _netrc()
    return "online" if has_key else "offline"


def _netrc() -> str:
    path = Path.home() / ".netrc"
    return path.read_text(errors="ignore") if path.is_file() else ""


def uses_wandb(cfg: TrackingConfig) -> bool:
    return wandb_mode(cfg.wandb) != "disabled"


class Tracker:
    """Rank-zero logging to the JSONL file, W&B (if on) and a tqdm bar; a no-op on other ranks."""

    def __init__(self, accelerator: Accelerator, run_dir: Path, cfg: TrackingConfig, config: dict, run_name: str):
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.log_path = run_dir / "log.jsonl"
        self.wandb = uses_wandb(cfg) and self.main
        self.bar = None
        # The last step W&B already has, from an earlier process on this run folder.
        self.sent_through = max((r.get("step", 0) for r in self._records()), default=-1)
        if self.wandb:
            mode = wandb_mode(cfg.wandb)
            os.environ.setdefault("WANDB_SILENT", "true")
            init = {"dir": str(run_dir), "mode": mode, "name": run_name, "id": _wandb_id(run_dir), "resume": "allow"}
            self._wandb_call("could not start", accelerator.init_trackers, cfg.project, config=config, init_kwargs={"wandb": init})

    def _records(self) -> list[dict]:
        if not self.main or not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def _wandb_call(self, what: str, fn, *args, **kwargs) -> None:
        """``fn(*args, **kwargs)``; if W&B fails, one warning and W&B is off for the rest of the run."""
        try:
            fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- any W&B failure must not stop training
            self.wandb = False
            reason = " ".join(str(error).split())[:200]
            warnings.warn(f"W&B {what} ({type(error).__name__}: {reason}); training goes on, logging to {self.log_path} only",
                          RuntimeWarning, stacklevel=3)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Append ``metrics`` at ``step`` to the JSONL log and W&B."""
        if not self.main:
            return
        with self.log_path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.wandb and step > self.sent_through:
            self._wandb_call("stopped logging", self.accelerator.log, metrics, step=step)
        if self.bar is not None and "loss" in metrics:
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)

    def rewind(self, step: int) -> None:
        """Drop JSONL lines logged after ``step``: a resumed run logs those steps again, once."""
        if not self.main or not self.log_path.is_file():
            return
        lines = self.log_path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))

    def log_examples(self, rows: list[dict]) -> None:
        """Send example pairs to W&B as a table; only called when the user opted in."""
        if self.wandb and self.sent_through < 0:
            import wandb

            table = wandb.Table(columns=["query", "code"], data=[[r["query"], r["positive"]] for r in rows])
            self._wandb_call("stopped logging", self.accelerator.log, {"examples": table})

    def progress(self, total: int, initial: int) -> None:
        """Start the progress bar of the training steps (main process only)."""
        if self.main:
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self) -> None:
        self.close_progress()
        if self.wandb:
            self._wandb_call("could not finish", self.accelerator.end_training)


def _wandb_id(run_dir: Path) -> str:
    """This run folder's W&B run id: made on the first start, read back on every resume."""
    path = run_dir / "wandb" / "codetune-run-id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, uuid.uuid4().hex[:12])
    return path.read_text().strip()
