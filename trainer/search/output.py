"""Hits as code-search tools print them: ``path:line  name  score``, then a few highlighted lines."""

from __future__ import annotations

from trainer.search.snippets import Hit

PREVIEW_LINES = 4


def print_hits(hits: list[Hit], *, full: bool = False, lines: int = PREVIEW_LINES, console=None) -> None:
    """One header per hit and its first ``lines`` lines (all of them with ``full``), numbered as in the file.

    ``console``: a ``rich.console.Console``; default: stdout (plain text when it is not a terminal).
    """
    # Here: rich's syntax highlighting loads pygments; `search query --json` and the library never print.
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.text import Text

    console = console or Console()
    for n, hit in enumerate(hits):
        s = hit.snippet
        header = Text.assemble((f"{s.path}:{s.start_line}", "cyan"), "  ", (s.name, "bold"), "  ", (f"{hit.score:.3f}", "green"))
        if n:
            console.print()
        console.print(header, soft_wrap=True)
        code = s.code.split("\n")
        shown = code if full else code[:lines]
        console.print(Syntax("\n".join(shown), s.language, theme="ansi_dark", line_numbers=True, start_line=s.start_line))
        if len(shown) < len(code):
            console.print(Text(f"      … {len(code) - len(shown)} more lines (--full)", style="dim"))
