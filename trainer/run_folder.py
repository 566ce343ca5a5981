"""A run's folder: where it goes, who holds it, when it may be replaced, and what a resume may change.

:func:`run_folder` wraps a recipe's body: nothing the user had is lost, whatever the body does.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from trainer.checkpoint import latest_checkpoint
from trainer.config import to_dict
from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_json

RUN_MARKER = ".codetune-run"  # written when codetune creates a run folder: only such a folder is ever replaced
LOCK_FILE = ".codetune-lock"  # flock-ed by the live run; the kernel drops the lock when its process dies
_RUN_OUTPUTS = ("log.jsonl", "eval.json", "eval_before.json", "checkpoints", "final")  # beside config.yaml in a run


def is_run_folder(path: Path) -> bool:
    """True for a folder codetune made: it has the marker, or (runs from before the marker) a config and results."""
    if (path / RUN_MARKER).is_file():
        return True
    return (path / "config.yaml").is_file() and any((path / name).exists() for name in _RUN_OUTPUTS)


def has_results(path: Path) -> bool:
    """A checkpoint or a final model: what makes a run worth protecting."""
    return latest_checkpoint(path) is not None or (path / "final" / "modules.json").is_file()


def _holder(run_dir: Path) -> str | None:
    """The pid recorded by a live run holding ``run_dir``'s lock, or None when no live run holds it."""
    path = run_dir / LOCK_FILE
    if not path.is_file():
        return None
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            return f.read().strip() or "?"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _lock(run_dir: Path):
    """Hold ``run_dir``'s lock for this process's life (the open file is the lock)."""
    f = (run_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CodetuneError(f"output_dir {run_dir}: another run is using it (pid {_holder(run_dir)})") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def _default_name(output_dir: str | None, recipe: str) -> Path:
    name = [output_dir or f"runs/{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"]
    broadcast_object_list(name)  # ranks must agree on a timestamped default
    return Path(name[0])


def _check_folder(run_dir: Path, resume: str | None, overwrite: bool) -> bool:
    """Whether ``run_dir`` must be moved aside first; raises before anything is touched when it must not be used."""
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise CodetuneError(f"output_dir {run_dir}: is a file, not a folder")
    if not any(run_dir.iterdir()):
        return False
    pid = _holder(run_dir)
    if pid is not None:
        raise CodetuneError(f"output_dir {run_dir}: another run is using it (pid {pid}); wait for it or choose another output_dir")
    if not is_run_folder(run_dir):
        raise CodetuneError(
            f"output_dir {run_dir}: holds files that are not a codetune run; nothing was changed, choose another output_dir"
        )
    if resume:
        return False
    if has_results(run_dir) and not overwrite:
        raise CodetuneError(
            f"output_dir {run_dir}: already holds a run; pass resume_from_checkpoint=latest to continue it, "
            "overwrite=true to replace it, or another output_dir"
        )
    return True  # a run to replace, or the leftovers of a setup that failed before producing anything


@contextmanager
def run_folder(output_dir: str | None, recipe: str, resume: str | None, overwrite: bool, acc: Accelerator) -> Iterator[Path]:
    """The run folder for the body of a recipe; nothing the user had is lost, whatever the body does.

    A folder that is not a codetune run is never touched. A run being replaced (``overwrite=true``,
    or one that never got as far as a checkpoint) is moved aside, not deleted, and deleted only
    when the new run has a checkpoint or a final model when the body ends. If the body fails
    before that, the new folder is removed and the old one moved back, so a failed setup leaves
    nothing behind that would block its corrected retry.

    Raises:
        CodetuneError: when ``output_dir`` holds something that may not be replaced.
    """
    run_dir = _default_name(output_dir, recipe)
    replace = _check_folder(run_dir, resume, overwrite)
    existed = run_dir.exists()
    fresh = replace or not existed or not any(run_dir.iterdir())
    aside = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}") if replace else None
    new_parents = [d for d in run_dir.absolute().parents if not d.exists()]  # deepest first; removed with a failed setup
    acc.wait_for_everyone()
    if acc.is_main_process:
        if aside is not None:
            run_dir.rename(aside)
            if has_results(aside):
                print(f"output_dir {run_dir}: previous run moved to {aside}; deleted once this run saves a checkpoint")
        run_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            atomic_write_json(run_dir / RUN_MARKER, {"recipe": recipe, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    lock = _lock(run_dir) if acc.is_main_process else None
    acc.wait_for_everyone()
    try:
        yield run_dir
    except BaseException:
        # No barrier here: the other ranks may be the ones that failed.
        if lock is not None:
            lock.close()
        if acc.is_main_process and fresh and not has_results(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            if aside is not None:
                aside.rename(run_dir)
            elif existed:
                run_dir.mkdir()  # the empty folder the user made stays
            for parent in new_parents:
                try:
                    parent.rmdir()  # only if empty: another run may have started there meanwhile
                except OSError:
                    break
        raise
    if lock is not None:
        lock.close()
    if acc.is_main_process and aside is not None:
        if has_results(run_dir):
            shutil.rmtree(aside, ignore_errors=True)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            aside.rename(run_dir)


# Keys that do not change what a run computes: a resume may change them freely.
RESUME_FREE_KEYS = ("output_dir", "overwrite", "resume_from_checkpoint", "cpu_threads", "collective_timeout_s", "tracking.", "eval.", "hub.",
                    "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "model.gradient_checkpointing")

# Knobs taken out of the code (docs/tried-not-kept.md) and the value each had by default: a run
# saved with that value computed what this code computes, so it may still be resumed.
RETIRED_DEFAULTS = {"loss.false_negative_margin": None, "loss.same_type_negatives": False, "train.layer_lr_decay": 1.0,
                    "data.consistency_top_k": 0, "data.hide_name_share": 0.0}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resume_config(saved_file: Path, cfg) -> None:
    """A resumed run must compute what the saved one did: refuse a changed hyperparameter, naming it.

    Raises:
        CodetuneError: listing each key (old -> new) that would change the trajectory.
    """
    if not saved_file.is_file():
        return
    saved = _flat(yaml.safe_load(saved_file.read_text()) or {})
    saved = {key: value for key, value in saved.items() if key not in RETIRED_DEFAULTS or RETIRED_DEFAULTS[key] != value}
    now = _flat(to_dict(cfg))
    changed = [
        f"{key} ({saved.get(key)!r} -> {now.get(key)!r})"
        for key in sorted(set(saved) | set(now))
        if saved.get(key) != now.get(key) and not key.startswith(RESUME_FREE_KEYS)
    ]
    if changed:
        raise CodetuneError(
            f"resume_from_checkpoint: the run in {saved_file.parent} was started with other settings: "
            f"{', '.join(changed)}; resume with its config.yaml, or start a new output_dir"
        )
