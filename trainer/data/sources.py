"""What a ``data.source`` entry names, resolved to the trees the miner reads.

The kinds of entry, besides ``stdlib`` (:mod:`~trainer.data.stdlib`) and dataset files
(:mod:`~trainer.data.formats`):

- ``pkg:NAME``: the files an installed distribution recorded (``importlib.metadata``'s
  ``distribution(NAME).files``, i.e. its ``RECORD``): those of a mined language, under its
  top-level packages, with ``test``/``tests``/``testing`` folders left out. Nothing of it is
  imported or run; its files are read as text.
- ``pkg:*``: every installed distribution, less ``data.exclude_projects``.
- a git work tree (a folder holding ``.git``): its tracked files alone (``git ls-files``), so
  build outputs and virtual environments inside it are not mined.
- any other folder or source file: every file in it.

A *project* is what the report, the mix and ``data.exclude_projects`` count by: a distribution,
or a vendored copy inside one. A sub-package of a ``_vendor``/``vendor``/``_vendored`` folder
(``pip/_vendor/requests``) is the project of its own name (``requests``), so excluding
``requests`` also leaves out pip's copy. Names match case-, ``-``/``_``/``.``-insensitively, on a
distribution's name or on its top-level import names (``pyyaml`` or ``yaml``).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from trainer.data.languages import language_for_path
from trainer.data.mining import ALWAYS_EXCLUDED, SourceTree
from trainer.errors import CodetuneError

PKG = "pkg:"
TEST_DIRS = ("test", "tests", "testing")  # as the out-of-domain sets of bench/quality.py leave them out
VENDOR_DIRS = ("_vendor", "vendor", "_vendored")
_METADATA_DIRS = (".dist-info", ".egg-info", ".data")


def project_key(name: str) -> str:
    """The comparable form of a project name: ``Scikit_Learn`` -> ``scikit-learn`` (PEP 503's normalisation)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_package(source: str) -> bool:
    """True for ``pkg:NAME`` and ``pkg:*``."""
    return source.startswith(PKG)


def is_git_tree(path: str | os.PathLike) -> bool:
    """True for the top folder of a git work tree (``.git`` is a folder, or a file in a linked worktree)."""
    return (Path(path) / ".git").exists()


def check_package(source: str) -> None:
    """Fail on ``pkg:NAME`` for a distribution that is not installed.

    Raises:
        CodetuneError: naming ``data.source``.
    """
    name = source[len(PKG) :]
    if name == "*":
        return
    try:
        importlib.metadata.distribution(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        raise CodetuneError(f"data.source: {source}: no installed distribution {name!r} (pip list shows them)") from None


def trees_of(source: str, exclude: Iterable[str] = ()) -> list[SourceTree]:
    """The trees to mine for a ``pkg:``, git or folder entry, leaving out the projects in ``exclude``."""
    if is_package(source):
        return package_trees(source, exclude)
    path = Path(source).expanduser()
    if path.is_dir() and is_git_tree(path):
        return [git_tree(path)]
    return [SourceTree(path)]


def package_trees(source: str, exclude: Iterable[str] = ()) -> list[SourceTree]:
    """One tree per project of ``pkg:NAME`` (the distribution and its vendored copies) or of ``pkg:*``.

    Raises:
        CodetuneError: ``pkg:NAME`` not installed, or left with no source file to mine.
    """
    check_package(source)
    name = source[len(PKG) :]
    dists = _distributions() if name == "*" else [importlib.metadata.distribution(name)]
    excluded = _expand(exclude)
    trees = [tree for dist in dists for tree in distribution_trees(dist, excluded)]
    if name != "*" and not trees and not _top_level(dist_files(dists[0])) & excluded:
        raise CodetuneError(f"data.source: {source}: its installed files hold no source to mine (an editable install?)")
    return trees


def dist_files(dist: importlib.metadata.Distribution) -> list[str]:
    """The distribution's files below its install folder (``../bin/...`` scripts and metadata left out)."""
    out = []
    for file in dist.files or []:
        parts = file.parts
        if ".." in parts or parts[0].endswith(_METADATA_DIRS):
            continue
        out.append("/".join(parts))
    return out


def distribution_trees(dist: importlib.metadata.Distribution, excluded: set[str] = frozenset()) -> list[SourceTree]:
    """A tree for the distribution's own files and one per vendored project, each with its files listed.

    Args:
        excluded: :func:`project_key` forms of projects to leave out; a distribution matches on
            its name or any of its top-level import names.
    """
    key = project_key(dist.metadata["Name"] or "")
    files = dist_files(dist)
    if not key or key in excluded or _top_level(files) & excluded:
        return []
    skip = set(TEST_DIRS) | set(ALWAYS_EXCLUDED)
    groups: dict[str, list[str]] = {}
    for rel in files:
        parts = rel.split("/")
        if language_for_path(parts[-1]) is None or any(p in skip or p.startswith(".") for p in parts[:-1]):
            continue
        groups.setdefault(_vendored_project(parts) or key, []).append(rel)
    root = Path(dist.locate_file(""))
    return [
        SourceTree(root, exclude_dirs=TEST_DIRS, label=project, files=tuple(rels), source=project)
        for project, rels in groups.items()
        if project not in excluded
    ]


def git_tree(path: Path) -> SourceTree:
    """The tracked files of the git work tree at ``path`` (``git ls-files``: local, no network).

    Raises:
        CodetuneError: git is missing or does not read the repository.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(path), "ls-files", "-z"], capture_output=True, timeout=300, check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CodetuneError(f"data.source: {path}: git ls-files failed: {err}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise CodetuneError(f"data.source: {path}: git ls-files failed: {message[0] if message else done.returncode}")
    files = tuple(f for f in done.stdout.decode("utf-8", errors="surrogateescape").split("\0") if f)
    return SourceTree(path, files=files)


def _distributions() -> list[importlib.metadata.Distribution]:
    """Every installed distribution once (the first on ``sys.path`` of two copies), sorted by name."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        seen.setdefault(project_key(dist.metadata["Name"] or ""), dist)
    return [seen[k] for k in sorted(seen) if k]


def _expand(exclude: Iterable[str]) -> set[str]:
    """Excluded names, plus the top-level import names of excluded distributions (``pyyaml`` adds ``yaml``),
    so that a vendored copy, known by its import name, is matched too."""
    keys = {project_key(name) for name in exclude}
    for dist in _distributions() if keys else []:
        if project_key(dist.metadata["Name"] or "") in keys:
            keys |= _top_level(dist_files(dist))
    return keys


def _top_level(files: list[str]) -> set[str]:
    """:func:`project_key` forms of the top-level packages and modules among a distribution's files."""
    return {project_key(f.split("/")[0].removesuffix(".py")) for f in files if "/" in f or f.endswith(".py")}


def _vendored_project(parts: list[str]) -> str | None:
    """The project a file belongs to when it sits in a vendor folder (the innermost), else None."""
    folders = parts[:-1]
    for i in range(len(folders) - 1, -1, -1):
        if folders[i] in VENDOR_DIRS:
            sub = parts[i + 1]
            if i + 1 == len(parts) - 1:  # a module right in the vendor folder: six.py; __init__.py is the host's
                return None if sub == "__init__.py" else project_key(sub.rsplit(".", 1)[0])
            return project_key(sub)
    return None
