"""Typed config: defaults < YAML < overrides, and one-line errors naming the file or flag."""

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trainer.config import load_config, split_argv
from trainer.errors import CodetuneError


@dataclass
class Inner:
    lr: float = 1.0
    dims: list[int] = field(default_factory=lambda: [4, 2])
    name: str | None = None


@dataclass
class Outer:
    output_dir: str | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_layers_of_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: 1e-4\n  dims: [8]\nflag: true\n")
    cfg = load_config(Outer, ["--config", str(path), "inner.dims=[16,8]", "--output_dir", "runs/x"])
    assert cfg.inner.lr == pytest.approx(1e-4)  # YAML's "1e-4" is a string; the float field reads it
    assert cfg.inner.dims == [16, 8] and cfg.flag is True and cfg.output_dir == "runs/x"
    assert load_config(Outer, ["inner.name=null"]).inner.name is None


@pytest.mark.parametrize(
    "argv,message",
    [
        (["inner.lrr=1"], "override inner.lrr: unknown key"),
        (["flag=maybe"], "override flag: expected true or false"),
        (["inner.dims=[a]"], "override inner.dims[0]: expected an integer"),
        (["--config", "nope.yaml"], "--config nope.yaml: file not found"),
        (["stray"], "argument 'stray': expected key=value"),
        (["--output_dir"], "flag --output_dir: missing a value"),
    ],
)
def test_errors_name_the_key(argv, message):
    with pytest.raises(CodetuneError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(Outer, argv)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inner:\n  lr: [\n")
    with pytest.raises(CodetuneError, match="bad.yaml:"):
        load_config(Outer, ["--config", str(path)])
    path.write_text("inner:\n  rate: 1\n")
    with pytest.raises(CodetuneError, match=r"bad.yaml: inner.rate: unknown key"):
        load_config(Outer, ["--config", str(path)])


def test_split_argv_forms():
    assert split_argv(["a=1", "--b", "2", "--c=3", "--config", "x.yaml"]) == ("x.yaml", [("a", "1"), ("b", "2"), ("c", "3")])


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("*.yaml"))


def _leaves(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_config_loads_into_its_own_recipe_with_every_value_it_sets(path):
    """The recipe is the one its header's launch line names; every key of the file reaches the config."""
    import yaml

    from trainer.launch import load_recipe, recipe_path

    (recipe,) = set(re.findall(r"^#.*recipes/(\w+)\.py", path.read_text(), re.M))
    cfg = load_recipe(recipe_path(recipe)).config(["--config", str(path)])
    values = _leaves(yaml.safe_load(path.read_text()))
    assert values, path
    for key, value in values.items():
        got = functools.reduce(getattr, key.split("."), cfg)
        assert got == (pytest.approx(float(value)) if isinstance(got, float) else value), key


def test_every_shipped_recipe_has_a_config_and_its_default_ships():
    from trainer.launch import load_recipe, recipe_path, shipped_recipes

    assert shipped_recipes() == ["lora", "matryoshka", "projection_head"]
    for name in shipped_recipes():
        module = load_recipe(recipe_path(name))
        assert Path(module.DEFAULT_CONFIG) in SHIPPED
        assert module.config([]) == module.config(["--config", str(module.DEFAULT_CONFIG)])


def test_yes_no_on_off_stay_strings():
    """YAML 1.1 reads `no` as false; `mixed_precision=no` must mean the string "no"."""
    from trainer.finetune import FineTuneConfig

    cfg = load_config(FineTuneConfig, ["mixed_precision=no", "overwrite=true"])
    assert cfg.mixed_precision == "no" and cfg.overwrite is True
    with pytest.raises(CodetuneError, match="overwrite: expected true or false, got 'yes'"):
        load_config(FineTuneConfig, ["overwrite=yes"])
