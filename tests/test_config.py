"""Typed config: defaults < YAML < overrides, and one-line errors naming the file or flag."""

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from trainer.config import load_config, split_argv, to_dict, yaml_layers
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


CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def _leaves(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_config_loads_into_its_own_recipe_with_every_value_it_sets(path):
    """The recipe is the one its header's launch line names; every key of the file (and its bases) reaches the config."""
    from trainer.launch import load_recipe, recipe_path

    (recipe,) = set(re.findall(r"^#.*recipes/(\w+)\.py", path.read_text(), re.M))
    cfg = load_recipe(recipe_path(recipe)).config(["--config", str(path)])
    values = {}
    for _, layer in yaml_layers(path):  # a base's values, then the file's own over them
        values.update(_leaves(layer))
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


@pytest.mark.parametrize("key", ["loss.false_negative_margin", "loss.same_type_negatives", "train.layer_lr_decay",
                                 "data.consistency_top_k", "data.hide_name_share"])
def test_a_removed_knob_is_an_unknown_key_but_a_run_saved_at_its_old_default_still_resumes(key, tmp_path):
    """docs/tried-not-kept.md's knobs: setting one fails as any unknown key does; a run folder saved
    before the removal, with the knob at the default it had (what this code computes), resumes."""
    from trainer.run_folder import RETIRED_DEFAULTS, check_resume_config
    from trainer.session import FineTuneConfig

    with pytest.raises(CodetuneError, match=f"^override {re.escape(key)}: unknown key"):
        load_config(FineTuneConfig, [f"{key}=1"])
    cfg = load_config(FineTuneConfig, [])
    saved = to_dict(cfg)
    section, name = key.split(".")
    saved[section][name] = RETIRED_DEFAULTS[key]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_resume_config(tmp_path / "config.yaml", cfg)


def test_yes_no_on_off_stay_strings():
    """YAML 1.1 reads `no` as false; `mixed_precision=no` must mean the string "no"."""
    from trainer.session import FineTuneConfig

    cfg = load_config(FineTuneConfig, ["mixed_precision=no", "overwrite=true"])
    assert cfg.mixed_precision == "no" and cfg.overwrite is True
    with pytest.raises(CodetuneError, match="overwrite: expected true or false, got 'yes'"):
        load_config(FineTuneConfig, ["overwrite=yes"])


def test_a_base_yaml_sits_between_the_defaults_and_the_yaml(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "root.yaml").write_text("flag: true\ninner:\n  lr: 0.5\n  dims: [8]\n  name: root\n")
    (tmp_path / "mid.yaml").write_text("base: shared/root.yaml\ninner:\n  dims: [16]\n")
    (tmp_path / "top.yaml").write_text("base: mid\ninner:\n  name: top\n")  # a name: mid.yaml beside it
    cfg = load_config(Outer, ["--config", str(tmp_path / "top.yaml"), "inner.lr=0.25"])
    assert cfg == Outer(flag=True, inner=Inner(lr=0.25, dims=[16], name="top"))
    cfg = load_config(Outer, ["--config", str(tmp_path / "top.yaml")])
    assert cfg.inner.lr == 0.5 and cfg.output_dir is None  # the root's value; a default nobody set


def test_a_base_error_names_the_file_that_holds_it(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ninner:\n  rate: 1\n")
    with pytest.raises(CodetuneError, match=r"b.yaml: base: a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)$"):
        load_config(Outer, ["--config", str(tmp_path / "a.yaml")])
    (tmp_path / "b.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(CodetuneError, match=r"b.yaml: base: gone.yaml: file not found$"):
        load_config(Outer, ["--config", str(tmp_path / "a.yaml")])
    (tmp_path / "b.yaml").write_text("inner:\n  rate: 1\n")
    with pytest.raises(CodetuneError, match=r"b.yaml: inner.rate: unknown key"):  # the base's own key, its own file
        load_config(Outer, ["--config", str(tmp_path / "a.yaml")])


def test_a_shipped_config_name_is_a_base(tmp_path):
    from trainer.launch import load_recipe, recipe_path

    mine = tmp_path / "mine.yaml"
    mine.write_text("base: matryoshka\ntrain:\n  lr: 1.0e-5\n")
    module = load_recipe(recipe_path("matryoshka"))
    assert module.config(["--config", str(mine)]) == module.config(["train.lr=1e-5"])


# What lora.yaml and mpnet.yaml set before they built on matryoshka.yaml: their resolved configs
# must not have moved. A file rewritten onto a base belongs here, with its old values; one written
# on a base from the start (questions.yaml) has no old values to keep.
# mpnet.yaml has since taken the default's measured levers on purpose (pca rotation and refit,
# attention dropout 0, file-grouped half batches, length buckets), and lora.yaml its own measured
# dropouts (peft's and the attention's at 0); they are listed here too. Both score people's
# questions before and after (eval.questions) and train on nothing a bench set scores
# (data.decontaminate) as the default does.
BEFORE_BASE = {
    "lora.yaml": {
        "model": {"name": "default", "max_seq_length": 128, "attention_dropout": 0.0},
        "data": {"source": "stdlib", "test_fraction": 0.1, "hard_negatives": 0, "decontaminate": ["bench"]},
        "loss": {"temperature": 0.05, "matryoshka_dims": [384, 256, 128, 64], "matryoshka_weights": None,
                 "gather_across_devices": True},
        "train": {"batch_size": 32, "gradient_accumulation_steps": 1, "grad_cache_chunk": 0, "lr": 5e-4,
                  "warmup_ratio": 0.1, "epochs": 1, "group_by_length": True, "checkpoint_every": 50, "log_every": 5},
        "eval": {"dims": [], "questions": ["staqc", "click"]},
        "tracking": {"wandb": "auto", "log_examples": False},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": []},
    },
    "mpnet.yaml": {
        "mixed_precision": "auto",
        "model": {"name": "mpnet-base", "max_seq_length": 256, "attention_dropout": 0.0, "pca_rotation": True,
                  "pca_refit": True},
        "data": {"source": "stdlib", "test_fraction": 0.1, "hard_negatives": 0,
                 "query_forms": ["docstring", "name", "short"], "decontaminate": ["bench"]},
        "loss": {"temperature": 0.05, "matryoshka_dims": [768, 512, 256, 128, 64], "matryoshka_weights": None,
                 "gather_across_devices": True, "symmetric": True},
        "train": {"batch_size": 32, "gradient_accumulation_steps": 1, "grad_cache_chunk": 8, "lr": 2e-5,
                  "warmup_ratio": 0.1, "epochs": 1.3, "group_by_length": False, "length_buckets": 4,
                  "group_by_source": "file", "source_share": 0.5, "checkpoint_every": 50, "log_every": 5,
                  # inherited; MPNet's attention has no SDPA dispatch, so nothing switches
                  "eager_attention_max_tokens": 200},
        "merge": {"alpha": 0.7},
        "eval": {"dims": [], "questions": ["staqc", "click"]},
        "tracking": {"wandb": "auto", "log_examples": False},
    },
}


@pytest.mark.parametrize("name", sorted(BEFORE_BASE))
def test_a_shipped_config_on_a_base_resolves_as_it_did_standalone(name, tmp_path):
    """The configs rewritten onto a base (those that were whole files before `base:` existed) resolve as they did."""
    import yaml

    from trainer.launch import load_recipe, recipe_path

    path = CONFIGS / name
    assert len(yaml_layers(path)) > 1
    (recipe,) = set(re.findall(r"^#.*recipes/(\w+)\.py", path.read_text(), re.M))
    module = load_recipe(recipe_path(recipe))
    standalone = tmp_path / path.name
    standalone.write_text(yaml.safe_dump(BEFORE_BASE[path.name]))
    assert to_dict(module.config(["--config", str(path)])) == to_dict(module.config(["--config", str(standalone)]))


def test_the_data_cli_takes_its_defaults_and_their_help_from_the_settings_classes(monkeypatch):
    """Change a dataclass default and `python -m trainer.data` follows, in its values and its --help."""
    from trainer.data import __main__ as data_cli
    from trainer.data.negatives import NegativesConfig
    from trainer.data.splits import SplitConfig

    monkeypatch.setattr(SplitConfig.__init__, "__defaults__", (0.25, 7, "folder", None))
    monkeypatch.setattr(NegativesConfig.__init__, "__defaults__", ((5, 20), 2, 0.95, 16))
    parser = data_cli._parser()
    mine = parser.parse_args(["mine", "stdlib", "--out", "x"])
    assert (mine.test_fraction, mine.seed, mine.group_by, mine.max_test_queries) == (0.25, 7, "folder", None)
    neg = parser.parse_args(["negatives", "--model", "default", "--data", "x"])
    assert (neg.window, neg.per_query, neg.batch_size) == ([5, 20], 2, 16)
    subparsers = next(a for a in parser._actions if a.choices and "mine" in a.choices).choices
    mine_help, neg_help = (" ".join(subparsers[c].format_help().split()) for c in ("mine", "negatives"))
    assert "(default 0.25)" in mine_help and "(default 7)" in mine_help and "(default folder)" in mine_help
    assert "(default 5 20)" in neg_help and "(default 2)" in neg_help and "(default 16)" in neg_help
