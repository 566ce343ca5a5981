"""Typed configuration: dataclasses, a YAML file per recipe, and command-line overrides.

Overrides name a field by its dotted path, as ``key=value`` or ``--key value``::

    accelerate launch recipes/matryoshka.py --config recipes/configs/bge.yaml \\
        train.lr=1e-5 loss.matryoshka_dims=[256,128] --output_dir runs/bge

A YAML may build on another with a top-level ``base:`` key: a path relative to the file, or a
shipped config's name (``base: matryoshka``). The base is applied first (recursively), so the
order is dataclass defaults < base YAML < the YAML < overrides.

Unknown keys and values of the wrong type fail with a one-line :class:`CodetuneError` that names
the file or flag, and so does a setting the recipe has no use for (:func:`refuse_unused`). The
resolved config is what a run saves next to its results.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_text

T = TypeVar("T")


def recipes_dir() -> Path:
    """The shipped recipes and their configs: ``trainer/recipes`` when installed, ``recipes/`` beside ``trainer/`` in a checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "recipes"
    return installed if installed.is_dir() else here.parent / "recipes"


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans (YAML 1.2): ``mixed_precision=no`` stays the string "no"."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def split_argv(argv: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """Split command-line words into the ``--config`` file and ``(dotted key, raw value)`` overrides."""
    config, overrides, i = None, [], 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("--"):
            key, eq, value = word[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise CodetuneError(f"flag --{key}: missing a value")
                value, i = argv[i + 1], i + 1
            if key == "config":
                config = value
            else:
                overrides.append((key.replace("-", "_"), value))
        elif "=" in word:
            key, _, value = word.partition("=")
            overrides.append((key, value))
        else:
            raise CodetuneError(f"argument {word!r}: expected key=value or --key value")
        i += 1
    return config, overrides


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check and convert a YAML value to the field's annotated type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except CodetuneError as err:
                errors.append(str(err))
        raise CodetuneError(errors[0])
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise CodetuneError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise CodetuneError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise CodetuneError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise CodetuneError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except (TypeError, ValueError):
            raise CodetuneError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise CodetuneError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise CodetuneError(f"{where}: expected a mapping of fields, got {value!r}")
        return _build(hint, value, where)
    raise CodetuneError(f"{where}: unsupported type {hint!r}")


def _join(where: str, key: str) -> str:
    """Extend a location: ``"file.yaml: " + "train"`` then ``"file.yaml: train" + ".lr"``."""
    return where + key if where.endswith(" ") else f"{where}.{key}"


def _build(cls: type[T], values: dict, where: str, base: T | None = None) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise CodetuneError(f"{_join(where, key)}: unknown key (known here: {', '.join(sorted(fields))})")
        current = getattr(base, key) if base is not None else None
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            kwargs[key] = _build(hints[key], value, _join(where, key), current)
        else:
            kwargs[key] = _coerce(value, hints[key], _join(where, key))
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _read_yaml(path: Path) -> dict:
    try:
        values = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise CodetuneError(f"{path}{line}: invalid YAML") from None
    if not isinstance(values, dict):
        raise CodetuneError(f"{path}: expected a mapping of config keys")
    return values


def _base_path(path: Path, base: Any) -> Path:
    """Where ``base:`` in ``path`` points: a file relative to ``path``, else a config name beside it or shipped."""
    if not isinstance(base, str) or not base:
        raise CodetuneError(f"{path}: base: expected a file path or a config name, got {base!r}")
    candidates = [path.parent / base]
    if not base.endswith((".yaml", ".yml")) and "/" not in base:
        candidates += [path.parent / f"{base}.yaml", recipes_dir() / "configs" / f"{base}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CodetuneError(f"{path}: base: {base}: file not found")


def yaml_layers(path: str | Path) -> list[tuple[Path, dict]]:
    """A YAML file and the chain of ``base:`` files under it, as ``(file, values)``, the deepest base first.

    Each ``values`` is that file's own mapping without its ``base`` key; applying them in order
    gives the file's resolved values.
    """
    layers: list[tuple[Path, dict]] = []
    seen: list[Path] = []
    path = Path(path)
    while True:
        if path.resolve() in seen:
            chain = " -> ".join(str(p) for p in [*(layer for layer, _ in reversed(layers)), path])
            raise CodetuneError(f"{layers[0][0]}: base: a cycle ({chain})")
        seen.append(path.resolve())
        values = _read_yaml(path)
        base = values.pop("base", None)
        layers.insert(0, (path, values))
        if base is None:
            return layers
        path = _base_path(path, base)


def load_config(cls: type[T], argv: list[str] | None = None, default_file: str | Path | None = None) -> T:
    """Build ``cls`` from its defaults, then a YAML file (after its ``base:`` chain), then command-line overrides.

    Args:
        cls: the recipe's top-level config dataclass.
        argv: command-line words (``sys.argv[1:]`` when None).
        default_file: YAML used when ``--config`` is not given.
    """
    config_file, overrides = split_argv(sys.argv[1:] if argv is None else argv)
    config_file = config_file or default_file
    cfg = cls()
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise CodetuneError(f"--config {path}: file not found")
        for layer, values in yaml_layers(path):
            cfg = _build(cls, values, f"{layer}: ", cfg)
    for key, raw in overrides:
        try:
            value = yaml.load(raw, Loader=_Loader) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        cfg = _build(cls, _nest(key, value), "override ", cfg)
    return cfg


def refuse_unused(cfg: T, recipe: str, unused: Mapping[str, str]) -> T:
    """``cfg``, once no setting that ``recipe`` ignores differs from its default.

    The recipes share config sections (every recipe has ``model``, ``data``, ``loss``, ``eval``),
    so a recipe may be handed a setting it never reads. Such a setting is an error, not a silent
    no-op: one line naming it, the recipe and why.

    Args:
        unused: dotted key -> why ``recipe`` has no use for it.

    Raises:
        CodetuneError: for the first key of ``unused`` whose value is not the dataclass default.
    """
    defaults = type(cfg)()
    for key, why in unused.items():
        value, default = (functools.reduce(getattr, key.split("."), c) for c in (cfg, defaults))
        if value != default:
            raise CodetuneError(
                f"{key}: {json.dumps(value)}: the {recipe} recipe does not use this setting ({why}); "
                f"leave it at its default, {json.dumps(default)}"
            )
    return cfg


def to_dict(cfg: Any) -> dict:
    """The config as plain data, ready for YAML and trackers."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically) so a run can be reproduced from its folder."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
