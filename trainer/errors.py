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


def cli_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI ``main`` and turn a :class:`CodetuneError` into one line on stderr and exit code 2."""
    try:
        return main(argv) or 0
    except CodetuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
