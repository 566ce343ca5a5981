"""The default dataset: (docstring, function) pairs mined from the running Python's standard library.

It needs no download, so the recipes and the demo run anywhere. Mining takes a few seconds; the
result is cached in ``$CODETUNE_CACHE`` (default ``~/.cache/codetune``) under
``stdlib-<python version>-<settings hash>/``, a folder laid out as ``python -m trainer.data mine``
writes one: ``train.jsonl``, ``test/`` (BEIR) and ``report.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import asdict
from pathlib import Path

import datasets

from trainer.data.formats import load_pairs
from trainer.data.mining import MiningConfig, SourceTree, mine
from trainer.data.splits import SplitConfig, split_mined, write_mined
from trainer.fileio import cache_root

# Left out: the test suite (tests are not documented functions), GUI and demo code, and vendored
# or installed third-party code.
STDLIB_EXCLUDE = ("test", "tests", "idlelib", "tkinter", "lib2to3", "site-packages", "ensurepip", "turtledemo")

# Bump when the miner's output changes for the same settings, so that old caches are not reused.
MINER_VERSION = 3


def stdlib_root() -> Path:
    """The folder of the running Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def is_stdlib(source: str | os.PathLike) -> bool:
    """True for the name ``stdlib`` and for the standard library's folder, however it is spelled."""
    return str(source) == "stdlib" or Path(source).resolve() == stdlib_root().resolve()


def stdlib_tree(root: str | os.PathLike | None = None) -> SourceTree:
    """The standard library (or ``root``, for tests) as a tree to mine, with :data:`STDLIB_EXCLUDE` left out."""
    return SourceTree(Path(root) if root is not None else stdlib_root(), exclude_dirs=STDLIB_EXCLUDE)


def stdlib_cache_dir(mining: MiningConfig, split: SplitConfig, root: str | os.PathLike | None = None) -> Path:
    """Where the dataset for these settings is cached: keyed by Python version, library path and every setting."""
    tree = stdlib_tree(root)
    key = json.dumps(
        {"miner": MINER_VERSION, "root": str(tree.root.resolve()), "mining": asdict(mining), "split": asdict(split)},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    version = ".".join(map(str, sys.version_info[:3]))
    return cache_root() / f"stdlib-{version}-{digest}"


def stdlib_dataset(
    mining: MiningConfig | None = None,
    split: SplitConfig | None = None,
    root: str | os.PathLike | None = None,
) -> tuple[datasets.Dataset, Path | None]:
    """Training rows and the held-out BEIR folder of the standard library, mined once and cached.

    Args:
        mining, split: settings (defaults when None); each combination has its own cache folder.
        root: mine this folder instead of the standard library (tests use a small tree).

    Returns:
        (train rows, test folder), the folder None when ``split.test_fraction`` is 0.
    """
    mining, split = mining or MiningConfig(), split or SplitConfig()
    folder = stdlib_cache_dir(mining, split, root)
    if not (folder / "report.json").is_file():
        _build(folder, mining, split, root)
    test = folder / "test"
    return load_pairs(folder / "train.jsonl"), test if test.is_dir() else None


def _build(folder: Path, mining: MiningConfig, split: SplitConfig, root: str | os.PathLike | None) -> None:
    """Mine into a temporary sibling and rename it into place, so no reader sees half a cache."""
    result = mine([stdlib_tree(root)], mining)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write_mined(tmp, split_mined(result, split), result.report, split)
        os.rename(tmp, folder)
    except OSError:
        if not (folder / "report.json").is_file():
            raise
        # Another process built the same cache first; its copy is as good as ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
