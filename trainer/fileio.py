"""Files: writes that never leave a half-written file behind (a temporary sibling, then rename), reads that fail
in one line, and the folder every cache lives under."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from trainer.errors import CodetuneError


def cache_root() -> Path:
    """``$CODETUNE_CACHE``, or ``~/.cache/codetune``."""
    return Path(os.environ.get("CODETUNE_CACHE") or "~/.cache/codetune").expanduser()


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary sibling of ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never a part; a failure leaves the old one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    atomic_write_with(path, lambda f: f.write(text.encode("utf-8")))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 file's text; a missing or non-UTF-8 file is a one-line :class:`CodetuneError`."""
    path = Path(path)
    if not path.is_file():
        raise CodetuneError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CodetuneError(f"{path}: not UTF-8 text (byte {err.start})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines file.

    Raises:
        CodetuneError: naming the file and line of a malformed line or one that is not an object.
    """
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CodetuneError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise CodetuneError(f"{path}:{lineno}: expected a JSON object, not {type(record).__name__}")
        yield lineno, record
