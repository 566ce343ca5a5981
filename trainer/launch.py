"""``codetune train``: check a recipe's config, start accelerate's launcher, exit with the recipe's own status.

    codetune train matryoshka train.lr=1e-5 output_dir=runs/x
    codetune train --multi_gpu --num_processes 8 --mixed_precision bf16 matryoshka --config bge output_dir=runs/bge
    codetune train lora lora.rank=16
    codetune train recipes/my_recipe.py key=value

Launcher flags (any of ``accelerate launch``'s) come before the recipe, the recipe's own arguments
after it, as with ``accelerate launch``. A recipe is the name of a shipped one or a ``.py`` file;
``--config NAME`` may name a shipped config (``bge``) instead of a path. The recipes and configs
ship inside the package (``trainer/recipes/``), so this works from a plain ``pip install``.

Exit statuses are the recipe's: 0 done, 2 bad input (one ``error:`` line), 75 stopped on request
after a checkpoint (requeue it), 1 any other failure, 128+N killed by signal N. ``accelerate launch``
itself raises ``CalledProcessError`` (one process) or torchrun's ``ChildFailedError`` (several)
with a traceback and exits 1 whatever the recipe returned; this launcher catches both.
The config is resolved and checked here first (types, unknown keys, value ranges, data paths, hub
token), so that a typo is one line before any worker starts; what needs the model (its name,
dimensions) is checked by the workers, whose status comes through unchanged.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from trainer.config import recipes_dir
from trainer.errors import CodetuneError

HELP_FLAGS = ("-h", "--help")


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.py") if not p.name.startswith("_"))


def shipped_configs() -> list[Path]:
    return sorted((recipes_dir() / "configs").glob("*.yaml"))


def recipe_path(spec: str) -> Path:
    """A shipped recipe's file by name (``matryoshka``), or a ``.py`` file as given."""
    if spec.endswith(".py"):
        if not Path(spec).is_file():
            raise CodetuneError(f"recipe {spec}: file not found")
        return Path(spec)
    if spec not in shipped_recipes():
        raise CodetuneError(f"recipe {spec!r}: unknown (shipped: {', '.join(shipped_recipes())}; or a .py file)")
    return recipes_dir() / f"{spec}.py"


def load_recipe(path: Path) -> ModuleType:
    """Import a recipe file as a module, without running it."""
    spec = importlib.util.spec_from_file_location(f"codetune_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    # A recipe watches for SIGUSR1 from its first line; the launcher must not swallow it: its
    # default action ends the launcher, and the kernel then tells every worker to checkpoint and stop.
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    return module


def with_shipped_config(args: list[str]) -> list[str]:
    """``--config NAME`` -> the shipped ``configs/NAME.yaml`` when NAME is not a file."""
    out, i = list(args), 0
    while i < len(out):
        word = out[i]
        value_at = i + 1 if word == "--config" else i if word.startswith("--config=") else None
        if value_at is not None and value_at < len(out):
            value = out[value_at].removeprefix("--config=")
            shipped = recipes_dir() / "configs" / f"{value}.yaml"
            if not Path(value).exists() and shipped.is_file():
                out[value_at] = str(shipped) if value_at != i else f"--config={shipped}"
        i += 1
    return out


def check_config(module: ModuleType, args: list[str]) -> None:
    """Resolve and check the recipe's config in this process: one line, exit 2, before any worker starts.

    A recipe of one's own without a ``config(argv)`` function is left to check its own.
    """
    if not callable(getattr(module, "config", None)):
        return
    from trainer.hardware import resolve_precision  # here, not at the top: keeps torch off `codetune train --help`

    cfg = module.config(args)
    if getattr(cfg, "data", None) is not None:
        cfg.data.check_paths()
    if hasattr(cfg, "mixed_precision"):
        resolve_precision(cfg.mixed_precision)


def recipe_help(path: Path) -> str:
    """The recipe's docstring, in ``codetune train`` terms, and where its configs are."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    doc = re.sub(r"accelerate launch|python(?= recipes/)", "codetune train", doc)
    doc = re.sub(r"recipes/configs/(\w+)\.yaml", r"\1", doc)
    doc = re.sub(r"recipes/(\w+)\.py", r"\1", doc)
    default = recipes_dir() / "configs" / f"{path.stem}.yaml"
    lines = [f"usage: codetune train [LAUNCHER FLAGS] {path.stem} [--config FILE|NAME] [key=value ...]", "", doc, ""]
    if default.is_file():
        lines.append(f"default config: {default}")
    lines.append("shipped configs (--config NAME): " + ", ".join(p.stem for p in shipped_configs()))
    lines.append("Every key of a config can be overridden as key=value; unknown keys fail.")
    return "\n".join(lines)


def usage() -> str:
    text = __doc__.replace("``", "`")
    return (f"usage: codetune train [LAUNCHER FLAGS] RECIPE [--config FILE|NAME] [key=value ...]\n\n{text}\n"
            f"Recipes: {', '.join(shipped_recipes())} (`codetune train RECIPE --help` says more). "
            "Launcher flags: `accelerate launch --help` lists them.")


class _DropLines(logging.Filter):
    """Drops launcher log lines that repeat what the recipe says, or that do not apply to codetune."""

    NOISE = (
        "The following values were not passed to `accelerate launch`",  # defaults are fine; the recipe sets its own
        "Setting OMP_NUM_THREADS environment variable",  # the recipe sets its threads (cpu_threads)
        "failed (exitcode:",  # the recipe printed why; its status is ours
        "Sending process",  # torchrun ending the other workers after one failed
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


def _quiet_launcher_logs() -> None:
    drop = _DropLines()
    for name in ("accelerate.commands.launch", "torch.distributed.run", "torch.distributed.elastic.multiprocessing.api",
                 "torch.distributed.elastic.agent.server.api"):
        logging.getLogger(name).addFilter(drop)


def _status_of(codes: list[int]) -> int:
    """One exit status for the workers' statuses, first failure first: the first a recipe chose, else a signal's 128+N."""
    chosen = [c for c in codes if c > 0]
    code = chosen[0] if chosen else codes[0]
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        print(f"error: the recipe was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else ""), file=sys.stderr)
        return 128 - code
    return code


def launch(launcher_flags: list[str], script: Path, args: list[str]) -> int:
    """Run ``accelerate launch [launcher_flags] script args``; returns the recipe's exit status."""
    # Here: accelerate and torch take seconds to import, and `codetune train --help` needs neither.
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    parser = launch_command_parser()
    parser.error = _raise
    launch_args = parser.parse_args([*launcher_flags, str(script), *args])
    _quiet_launcher_logs()
    try:
        launch_command(launch_args)
    except subprocess.CalledProcessError as err:
        return _status_of([err.returncode])
    except ChildFailedError as err:
        failures = sorted(err.failures.values(), key=lambda f: f.timestamp)
        return _status_of([f.exitcode for f in failures])
    except (ValueError, FileNotFoundError) as err:  # accelerate's checks of its flags and config file
        raise CodetuneError(f"accelerate launch: {err}") from None
    return 0


def _raise(message: str):
    raise CodetuneError(f"codetune train: {message}")


def split_launcher_flags(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """``[launcher flags] RECIPE [recipe args]`` split by accelerate's own parser (it knows which flags take a value)."""
    from accelerate.commands.launch import launch_command_parser  # here: as in launch(), off `codetune train --help`

    parser = launch_command_parser()
    parser.error = _raise
    parsed = parser.parse_args(argv)
    recipe_at = len(argv) - len(parsed.training_script_args) - 1
    return argv[:recipe_at], parsed.training_script, parsed.training_script_args


def main(argv: list[str] | None = None) -> int:
    """``codetune train``'s entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in HELP_FLAGS:
        print(usage())
        return 0 if argv else 2
    flags, recipe, args = split_launcher_flags(argv)
    path = recipe_path(recipe)
    if any(a in HELP_FLAGS for a in args):
        print(recipe_help(path))
        return 0
    args = with_shipped_config(args)
    check_config(load_recipe(path), args)
    return launch(flags, path, args)
