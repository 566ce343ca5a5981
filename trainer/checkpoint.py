"""Checkpoints that survive a kill mid-save, ``latest``, resume, and the final export.

A checkpoint is written under a temporary name and renamed into place only when complete; the
``latest`` pointer is replaced atomically afterwards. A kill at any moment leaves the previous good
checkpoint and pointer untouched.

Nothing in a checkpoint is unpickled with code execution allowed: weights, optimizer and RNG
states go through accelerate's ``weights_only`` loading, and the loop's own state (step, scheduler)
is JSON in ``trainer_state.json``. accelerate's ``register_for_checkpointing`` is not used, because
it loads ``custom_checkpoint_*.pkl`` with ``weights_only=False``.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from accelerate import Accelerator

from trainer.errors import CodetuneError, first_line
from trainer.fileio import atomic_write_text

STATE_FILE = "trainer_state.json"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, keep: int = 2, state: dict | None = None) -> Path:
    """Save model, optimizer and RNG states of every process at ``step``; a collective call.

    Args:
        state: JSON-serialisable loop state (e.g. the LR scheduler's ``state_dict()``), given back
            by :func:`load_checkpoint`.

    Returns:
        The checkpoint folder ``run_dir/checkpoints/step-<step>``.
    """
    root = checkpoint_dir(run_dir)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps({**(state or {}), "step": step}))
    except (OSError, RuntimeError) as err:
        # torch and safetensors wrap ENOSPC in errors of their own ("iostream error", "unexpected
        # pos"), so a full disk is also told by the space left while the partial folder still lies there.
        free = shutil.disk_usage(root).free
        need = sum(p.numel() * p.element_size() for m in getattr(accelerator, "_models", []) for p in m.parameters()) * 3
        shutil.rmtree(tmp, ignore_errors=True)
        enospc = isinstance(err, OSError) and err.errno == errno.ENOSPC
        if not (enospc or free < max(need, 2**20)):
            raise
        kept = latest_checkpoint(run_dir)
        raise CodetuneError(
            f"checkpoint {final}: disk full ({free / 2**20:.1f} MB free on {root}, a checkpoint needs about "
            f"{need / 2**20:.1f} MB); {'the last checkpoint ' + str(kept) + ' is kept' if kept else 'no checkpoint was kept'}"
        ) from None
    if accelerator.is_main_process:
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


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    """Restore model, optimizer and RNG states from ``path``; returns its ``trainer_state.json`` (with ``step``).

    Raises:
        CodetuneError: a file in the checkpoint holds objects other than tensors and plain data
            (a pickle that would run code is refused, not loaded).
    """
    try:
        state = json.loads((path / STATE_FILE).read_text())
        with _without_custom_pickles(path) as folder:
            accelerator.load_state(str(folder))
    except pickle.UnpicklingError as err:
        raise CodetuneError(
            f"resume_from_checkpoint={path}: refused to load a file that is not plain tensors ({first_line(err)})"
        ) from None
    except (ValueError, KeyError) as err:
        raise CodetuneError(f"resume_from_checkpoint={path}: unreadable checkpoint ({err})") from None
    return state


@contextmanager
def _without_custom_pickles(path: Path) -> Iterator[Path]:
    """``path``, or a hard-linked view of it without ``custom_checkpoint_*.pkl``.

    accelerate loads those with ``weights_only=False`` (code runs) and refuses a folder that has
    more of them than registered objects. codetune 0.1 kept the scheduler there; now it is JSON,
    so the pickles of an old (or a planted) checkpoint are left unread, and the folder unchanged.
    """
    pickles = list(path.glob("custom_checkpoint_*.pkl"))
    if not pickles:
        yield path
        return
    view = Path(tempfile.mkdtemp(prefix=".load-", dir=path.parent))
    try:
        for item in path.iterdir():
            if item not in pickles:
                _link_tree(item, view / item.name)
        yield view
    finally:
        shutil.rmtree(view, ignore_errors=True)


def _link_tree(src: Path, dst: Path) -> None:
    if src.is_dir():
        dst.mkdir()
        for item in src.iterdir():
            _link_tree(item, dst / item.name)
        return
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: a copy reads the same
        shutil.copy2(src, dst)


def export_model(model, folder: Path) -> None:
    """Save a sentence-transformers folder atomically (``SentenceTransformer(folder)`` loads it)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
