"""Checkpoints that survive a kill mid-save, ``latest``, resume, and the final export.

A checkpoint is written under a temporary name and renamed into place only when complete; the
``latest`` pointer is replaced atomically afterwards. A kill at any moment leaves the previous good
checkpoint and pointer untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from accelerate import Accelerator

from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_text

STATE_FILE = "trainer_state.json"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, keep: int = 2) -> Path:
    """Save model, optimizer, scheduler and RNG states of every process at ``step``; a collective call.

    Returns:
        The checkpoint folder ``run_dir/checkpoints/step-<step>``.
    """
    root = checkpoint_dir(run_dir)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(root / "latest", final.name)
        for old in sorted(_steps(root))[:-keep] if keep > 0 else []:
            if old != step:
                shutil.rmtree(root / f"step-{old}", ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _steps(root: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in root.glob("step-*") if p.name.split("-")[1].isdigit()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint the ``latest`` pointer names, or None when there is none."""
    pointer = checkpoint_dir(run_dir) / "latest"
    if not pointer.is_file():
        return None
    path = checkpoint_dir(run_dir) / pointer.read_text().strip()
    return path if (path / STATE_FILE).is_file() else None


def resolve_resume(run_dir: Path, spec: str | None) -> Path | None:
    """Turn ``resume_from_checkpoint`` into a folder.

    ``latest`` requires one; ``auto`` resumes when there is one (requeued cluster jobs); any
    other value is a checkpoint folder.
    """
    if not spec:
        return None
    if spec in ("latest", "auto"):
        found = latest_checkpoint(run_dir)
        if found is None and spec == "latest":
            raise CodetuneError(f"resume_from_checkpoint=latest: no checkpoint in {checkpoint_dir(run_dir)}")
        return found
    path = Path(spec)
    if not (path / STATE_FILE).is_file():
        raise CodetuneError(f"resume_from_checkpoint={spec}: not a checkpoint folder (no {STATE_FILE})")
    return path


def load_checkpoint(accelerator: Accelerator, path: Path) -> int:
    """Restore every registered state from ``path``; returns the step it was saved at."""
    accelerator.load_state(str(path))
    return int(json.loads((path / STATE_FILE).read_text())["step"])


def export_model(model, folder: Path) -> None:
    """Save a sentence-transformers folder atomically (``SentenceTransformer(folder)`` loads it)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
