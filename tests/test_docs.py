"""Every fenced shell and Python block of README.md and docs/*.md is checked, without training.

- ``python`` blocks are compiled, then run in an empty folder, unless the line before the fence
  says why not: ``<!-- not run: needs a trained model -->`` (a reason is required).
- ``bash`` blocks are split into commands. A recipe launch (``accelerate launch ... recipes/X.py``,
  ``codetune train ... X``, ``python recipes/X.py``, ``sbatch launch/S.sbatch X``) has its config
  and ``key=value`` overrides resolved by the recipe's own loader, so an unknown or misspelt key
  fails here. A module's command line (``codetune SUB``, ``python -m trainer.X``, ``accelerate
  launch -m trainer.X``) and ``python bench/X.py`` have their flags parsed by the program's own
  argparse parser, stopped right after parsing. A command this file does not know fails.
- ``<!-- needs: gpu -->`` / ``<!-- needs: cluster -->`` before a fence: the block cannot run on a
  CPU machine. Its commands are still checked as above (none needs the hardware); cluster tools
  (srun, squeue, scancel, ...) are allowed there alone, and the test reports the block as skipped
  with the reason. Many-GPU launches and cluster tools require the marker.
- README's two opening commands (and blocks identical to them) are exempt: CI runs them.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
NEEDS = {"gpu", "cluster"}
MARKER = re.compile(r"<!--\s*(not run|needs):(.*?)-->")  # alone on the line before a fence
PLAIN = {"pip", "mkdir", "export", "cd", ".", "source", "wandb", "ls", "cat", "rm", "git"}  # nothing of ours to check
CLUSTER = {"srun", "squeue", "scancel", "scontrol", "sinfo", "sudo", "launch/local_cluster.sh"}
SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: tuple[str, str] | None  # ("not run" | "needs", reason)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def fenced_blocks(text: str, page: str) -> list[Block]:
    """The ```lang blocks of a Markdown text, each with the HTML-comment marker on the line before its fence."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        fence = re.match(r"^\s*(`{3,})(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        ticks = fence.group(1)  # a block opened with N backticks closes with N: ```` can show a ``` block
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks), None)
        assert end is not None, f"{page}:{i + 1}: a fence that is never closed"
        found = MARKER.fullmatch(lines[i - 1].strip()) if i else None
        marker = (found.group(1), found.group(2).strip()) if found else None
        blocks.append(Block(page, i + 1, fence.group(2), "\n".join(lines[i + 1:end]) + "\n", marker))
        i = end + 1
    return blocks


def readme_commands() -> set[str]:
    """README's two opening blocks: the main job and the test suite, run by CI itself."""
    blocks = fenced_blocks((ROOT / "README.md").read_text(), "README.md")
    return {b.code for b in blocks[:2]}


def all_blocks() -> list[Block]:
    exempt = readme_commands()
    found = []
    for path in PAGES:
        found += [b for b in fenced_blocks(path.read_text(), str(path.relative_to(ROOT))) if b.code not in exempt]
    return found


# ---- commands --------------------------------------------------------------------------------------

def commands(code: str) -> list[list[str]]:
    """Shell text -> commands as argv lists: continuation lines joined, comments dropped, split at && ; | etc."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):  # VAR=value before the command
                    argv.pop(0)
                if argv:
                    out.append(argv)
                argv = []
            else:
                argv.append(token)
    return out


class _Parsed(Exception):
    """Raised by the patched ``parse_args``: the flags parsed; nothing else runs."""


def _parse_only(run, *args) -> None:
    """Call ``run(*args)`` with every argparse parser stopping right after it parses: exit 0 or a parse is a pass."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        run(*args)
    except _Parsed:
        return
    except SystemExit as stop:  # argparse's error (2) or --help (0)
        assert stop.code in (0, None), f"exit status {stop.code}"
        return
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError("the command line was never parsed")


def check_module(name: str, argv: list[str]) -> None:
    """``python -m NAME ARGV``: its ``main(argv)``'s parser accepts the flags."""
    assert name.startswith("trainer."), f"python -m {name}: not one of codetune's modules"
    module = importlib.import_module(name)
    if not hasattr(module, "main"):
        module = importlib.import_module(f"{name}.__main__")  # guarded by __name__, so importing runs nothing
    _parse_only(module.main, argv)


@functools.cache
def _recipe(spec: str):
    from trainer.launch import load_recipe, recipe_path

    return load_recipe(recipe_path(spec))


def check_recipe(spec: str, args: list[str]) -> None:
    """A recipe (a shipped name or a .py file) and its arguments: the recipe's own loader resolves them."""
    from trainer.launch import HELP_FLAGS, with_shipped_config

    module = _recipe(spec)
    if not any(a in HELP_FLAGS for a in args):
        module.config(with_shipped_config(args))


def check_accelerate(argv: list[str]) -> None:
    from accelerate.commands.launch import launch_command_parser

    assert argv[:1] == ["launch"], "accelerate: only `accelerate launch` is documented"
    parsed = launch_command_parser().parse_args(argv[1:])
    if parsed.module:
        check_module(parsed.training_script, parsed.training_script_args)
    else:
        assert re.fullmatch(r"recipes/\w+\.py", parsed.training_script), f"not a recipe: {parsed.training_script}"
        check_recipe(parsed.training_script, parsed.training_script_args)


def check_codetune(argv: list[str]) -> None:
    from trainer.cli import COMMANDS, run
    from trainer.launch import split_launcher_flags

    if not argv or argv[0] in ("-h", "--help", "--version"):
        _parse_only(run, argv or ["--help"])
    elif argv[0] == "train":
        _, recipe, args = split_launcher_flags(argv[1:])
        check_recipe(recipe, args)
    else:
        assert argv[0] in COMMANDS, f"codetune {argv[0]}: no such subcommand"
        module, words, _ = COMMANDS[argv[0]]
        check_module(module, [*words, *argv[1:]])


def check_python(argv: list[str]) -> None:
    if argv[0] == "-m":
        if argv[1] in ("venv", "pytest", "pip"):
            return
        check_module(argv[1], argv[2:])
    elif re.fullmatch(r"recipes/\w+\.py", argv[0]):
        check_recipe(argv[0], argv[1:])
    elif argv[0].startswith("bench/"):
        assert (ROOT / argv[0]).is_file(), f"{argv[0]}: no such file"
        saved = sys.argv
        sys.argv = list(argv)
        try:
            _parse_only(runpy.run_path, str(ROOT / argv[0]), None, "__main__")
        finally:
            sys.argv = saved
    else:
        raise AssertionError(f"python {argv[0]}: not a recipe, a bench script or a trainer module")


def check_sbatch(argv: list[str]) -> None:
    """``sbatch [--opt=value ...] launch/S.sbatch RECIPE ARGS``: the script exists; the rest is `codetune train`'s."""
    rest = [a for a in argv if not a.startswith("-")]
    assert all("=" in a for a in argv[:argv.index(rest[0])]), "sbatch options are written --name=value here"
    assert (ROOT / rest[0]).is_file(), f"{rest[0]}: no such file"
    script_at = argv.index(rest[0])
    if script_at + 1 < len(argv):
        check_recipe(argv[script_at + 1], argv[script_at + 2:])


def needs_marker(argv: list[str]) -> str | None:
    """The kind of machine a command needs beyond a CPU one, if any."""
    if argv[0] in CLUSTER or argv[0] == "sbatch":
        return "cluster"
    if argv[:2] == ["accelerate", "launch"] and ("--multi_gpu" in argv or "--config_file" in argv):
        procs = argv[argv.index("--num_processes") + 1] if "--num_processes" in argv else "8"
        if "--config_file" in argv or int(procs) > 2:
            return "gpu"
    return None


def check_command(argv: list[str], needs: str | None) -> str:
    """Checks one command; returns what was done ("checked", "plain" or "cluster tool")."""
    wanted = needs_marker(argv)
    if wanted is not None:
        assert needs is not None, f"`{shlex.join(argv)}` needs a {wanted}: put <!-- needs: {wanted} --> before the fence"
    if argv[0] in CLUSTER:
        return "cluster tool"
    if argv[0] in PLAIN:
        return "plain"
    check = {"accelerate": check_accelerate, "codetune": check_codetune, "python": check_python,
             "python3": check_python, "sbatch": check_sbatch}.get(argv[0])
    assert check is not None, f"`{argv[0]}`: a command the docs test does not know; check it here or mark it"
    check(argv[1:])
    return "checked"


def check_block(block: Block) -> str | None:
    """Checks a block; returns why the rest of it is skipped (None: all of it was checked or run)."""
    kind, reason = block.marker or (None, "")
    if kind == "not run":
        assert block.lang == "python", f"{block.id}: <!-- not run --> is for Python blocks; shell blocks are never run"
        assert reason, f"{block.id}: <!-- not run: REASON --> needs a reason"
    if kind == "needs":
        assert reason in NEEDS, f"{block.id}: <!-- needs: {reason} -->: expected one of {sorted(NEEDS)}"
    if block.lang == "python":
        code = compile(block.code, block.id, "exec")
        if kind == "not run":
            return f"not run: {reason}"
        exec(code, {"__name__": "__docs__"})
        return f"needs: {reason} (compiled, not run)" if kind == "needs" else None
    if block.lang in SHELL:
        done = []
        for argv in commands(block.code):
            try:
                done.append(check_command(argv, reason if kind == "needs" else None))
            except Exception as err:
                raise AssertionError(f"{block.id}: `{shlex.join(argv)}`: {err}") from err
        return f"needs: {reason} ({done.count('checked')} commands checked, not run)" if kind == "needs" else None
    return None  # output, layouts, YAML: nothing to run


BLOCKS = all_blocks()


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python" or b.lang in SHELL], ids=lambda b: b.id)
def test_block(block, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT if block.lang in SHELL else tmp_path)  # configs by repo path; Python writes nowhere real
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    skipped = check_block(block)
    if skipped:
        pytest.skip(f"{block.id}: {skipped}")


def test_every_marker_sits_before_a_fence():
    """A marker anywhere else would silently mark nothing."""
    for path in PAGES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if MARKER.fullmatch(line.strip()):
                assert i + 1 < len(lines) and lines[i + 1].startswith("```"), f"{path.name}:{i + 1}: marker not before a fence"


def test_the_blocks_are_found():
    """The parser sees what the pages hold: both kinds, and each marker kind."""
    langs = {b.lang for b in BLOCKS}
    assert {"python", "bash"} <= langs
    assert {b.marker[0] for b in BLOCKS if b.marker} == {"not run", "needs"}
    assert len(readme_commands()) == 2


BAD = [
    ("```bash\naccelerate launch recipes/matryoshka.py train.lrr=1e-5\n```\n", "train.lrr: unknown key"),
    ("```bash\ncodetune train lora --config bge lora.rnak=16\n```\n", "lora.rnak: unknown key"),
    ("```bash\npython recipes/projection_head.py head.rank=many\n```\n", "head.rank"),
    ("```bash\ncodetune serach index src/\n```\n", "no such subcommand"),
    ("```bash\npython -m trainer.evaluate --modle default --data d\n```\n", "exit status 2"),
    ("```bash\npython bench/nope.py\n```\n", "no such file"),
    ("```bash\npython bench/quality.py runs/x/final --jsn x.json\n```\n", "exit status 2"),
    ("```bash\naccelerate launch --multi_gpu --num_processes 8 recipes/lora.py\n```\n", "needs: gpu"),
    ("```bash\nsbatch launch/single_node.sbatch matryoshka\n```\n", "needs: cluster"),
    ("<!-- needs: cluster -->\n```bash\nsbatch launch/single_node.sbatch matryoshka train.bach_size=8\n```\n", "train.bach_size"),
    ("```bash\nmake docs\n```\n", "does not know"),
    ("<!-- not run: -->\n```python\nprint(1)\n```\n", "needs a reason"),
    ("<!-- needs: tpu -->\n```bash\ncodetune --help\n```\n", "expected one of"),
    ("```python\nraise ValueError('the block is wrong')\n```\n", "the block is wrong"),
    ("<!-- not run: needs a trained model -->\n```python\ndef f(:\n```\n", "invalid syntax"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m for _, m in BAD])
def test_a_bad_block_fails(text, message, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    (block,) = fenced_blocks("\n" + text, "bad.md")
    with pytest.raises(Exception, match=re.escape(message) if message != "invalid syntax" else message):
        check_block(block)


def test_good_blocks_pass_and_skips_say_why(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    text = ("```bash\ncodetune train --num_processes 2 matryoshka --config bge train.lr=1e-5  # a comment\n"
            "python -m trainer.search query .codetune-index \"retry\" -k 5 && pip install chromadb\n```\n"
            "<!-- needs: cluster -->\n```bash\nsbatch --nodes=2 launch/multinode.sbatch recipes/lora.py lora.rank=8\n"
            "squeue\n```\n"
            "<!-- not run: needs a trained model -->\n```python\nmodel = load('runs/x/final')\n```\n")
    plain, cluster, python = fenced_blocks(text, "good.md")
    assert check_block(plain) is None
    assert check_block(cluster) == "needs: cluster (1 commands checked, not run)"
    assert check_block(python) == "not run: needs a trained model"
