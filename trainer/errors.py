"""The one error type users see.

Library code raises :class:`CodetuneError` with a one-line message that names the file, line,
field or flag at fault. Command-line entry points catch it at the boundary (see :func:`cli_main`),
print ``error: <message>`` and exit with status 2, so users never read a traceback from deep inside
torch for a mistake in their own input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class CodetuneError(Exception):
    """A problem with the user's input: config, flags, files or model spec."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message cut to its first line and ``limit`` characters, or its type's name when empty:
    the reason inside a one-line :class:`CodetuneError` wrapping a library's error."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


class RunFailed(Exception):
    """The run cannot go on for a reason outside the user's input (e.g. another process died): exit 1."""


def cli_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI ``main``; a :class:`CodetuneError` is one line on stderr and exit 2, a :class:`RunFailed` one line and exit 1."""
    try:
        return main(argv) or 0
    except CodetuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
