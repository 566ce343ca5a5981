"""Every bad input through the real command line: one line on stderr, exit status 2, nothing written.

One row per category of the input probe (config, model, data, dims, evaluation set, index,
compare), and the same through `codetune train`; signals are in tests/test_stop.py. Each command runs in an empty working folder and
points its outputs there, so "nothing written" is checked by that folder staying empty.
"""

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BEIR = Path(__file__).parent / "fixtures" / "beir_code"
RECIPE = str(ROOT / "recipes" / "matryoshka.py")
HEAD = str(ROOT / "recipes" / "projection_head.py")
TRAIN = ["-m", "trainer.cli", "train"]  # `codetune train`
ONE_CPU = ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def _cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(id, argv after python, text the error line must contain); ``tmp`` holds the inputs."""
    (tmp / "bad.jsonl").write_text('{"query": "x"}\n')  # no positive column
    (tmp / "run" / "final").mkdir(parents=True, exist_ok=True)  # a run folder without eval.json
    run = ["output_dir=out/run"]
    return [
        ("config: value of the wrong type", [RECIPE, *run, "train.lr=abc"], "train.lr"),
        ("config: unknown key", [RECIPE, *run, "train.learning_rate=1e-4"], "train.learning_rate"),
        ("config: unknown section", [RECIPE, *run, "optim.lr=1"], "optim"),
        ("config: missing file", [RECIPE, *run, "--config", "nope.yaml"], "nope.yaml"),
        ("config: negative temperature", [RECIPE, *run, "loss.temperature=-1"], "loss.temperature"),
        ("config: weights shorter than dims", [RECIPE, *run, "loss.matryoshka_weights=[1,1]"], "loss.matryoshka_weights"),
        ("config: collective timeout", [RECIPE, *run, "collective_timeout_s=0"], "collective_timeout_s"),
        ("model: no such folder or name", [RECIPE, *run, "model.name=./no-such-model"], "no-such-model"),
        ("data: no such source", [RECIPE, *run, "data.source=./no/such/tree"], "data.source"),
        ("data: rows without a positive", [RECIPE, *run, f"data.source={tmp / 'bad.jsonl'}"], "positive"),
        ("dims: larger than the model", [RECIPE, *run, "loss.matryoshka_dims=[999]"], "matryoshka_dims"),
        ("evaluation set: missing folder", [RECIPE, *run, "data.eval=./no-beir"], "data.eval"),
        ("head: negative rank", [HEAD, *run, "head.rank=-1"], "head.rank"),
        ("head: unknown compute", [HEAD, *run, "head.compute=fp8"], "head.compute"),
        ("head: a setting it does not use", [HEAD, *run, "data.hard_negatives=3"],
         "data.hard_negatives: 3: the projection_head recipe does not use this setting"),
        ("evaluate: missing set", ["-m", "trainer.evaluate", "--data", "./no-beir", "--output", "out/r.json"], "no-beir"),
        ("evaluate: dim too large", ["-m", "trainer.evaluate", "--data", str(BEIR), "--dims", "999", "--output", "out/r.json"], "999"),
        ("mine: missing tree", ["-m", "trainer.data", "mine", "./no-src", "--out", "out/mined"], "no-src"),
        ("index: missing index", ["-m", "trainer.search", "query", "./no-index", "a question"], "no-index"),
        ("index: k below 1", ["-m", "trainer.search", "query", "./no-index", "q", "-k", "0"], "-k"),
        ("compare: run without results", ["-m", "trainer.compare", str(tmp / "run")], "eval.json"),
        ("codetune: unknown command", ["-m", "trainer.cli", "frobnicate"], "frobnicate"),
        # `codetune train` checks the config before accelerate starts a worker ...
        ("train: value of the wrong type", [*TRAIN, "matryoshka", *run, "train.lr=abc"], "train.lr"),
        ("train: unknown key of the lora recipe", [*TRAIN, "lora", *run, "lora.rnk=4"], "lora.rnk"),
        ("train: a setting the lora recipe does not use", [*TRAIN, "lora", *run, "merge.alpha=0.5"],
         "merge.alpha: 0.5: the lora recipe does not use this setting"),
        ("train: unknown recipe", [*TRAIN, "nope", *run], "nope"),
        ("train: shipped config that is not", [*TRAIN, "matryoshka", *run, "--config", "nope"], "nope"),
        ("train: launcher flag of the wrong type", [*TRAIN, "--num_processes", "x", "matryoshka", *run], "--num_processes"),
        ("train: no such data", [*TRAIN, "matryoshka", *run, "data.source=./no/such/tree"], "data.source"),
        # ... and a worker's own error comes through as the worker's one line and status, not a traceback and 1.
        ("train: a model the worker cannot load", [*TRAIN, *ONE_CPU, "matryoshka", *run, "model.name=./no-such-model"],
         "no-such-model"),
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding
    from tokenizers import Tokenizer, models

    tmp = tmp_path_factory.mktemp("inputs")
    # A model with no layers, attention or transformer: nothing for the model.* training knobs to act on.
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "def": 1}, unk_token="[UNK]"))
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=8)], device="cpu").save(str(tmp / "static-model"))
    return tmp


def _ids() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [c[0] for c in _cases(Path(tmp))]


@pytest.mark.parametrize("case", _ids())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, inputs, tmp_path):
    (_, argv, needle), = [c for c in _cases(inputs) if c[0] == case]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    # Progress bars (a model load before a dims check) are progress, not messages.
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not re.search(r"\d+%\|", line)]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed command left files behind"


def test_plain_accelerate_launch_quiet_shows_the_recipe_line_alone(tmp_path):
    """`accelerate launch -q RECIPE` (the README's entry point, quiet): the recipe's one line, no traceback.

    accelerate's launcher ends with its own status 1 there (its `sys.exit(1)`), not the recipe's 2:
    docs/reliability.md says so and points to `codetune train` for the real status.
    """
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "accelerate.commands.launch", "-q", *ONE_CPU, "--num_cpu_threads_per_process", "1",
            RECIPE, "output_dir=out/run", "train.lr=abc"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-2000:])
    assert [line for line in lines if line.startswith("error: ")] == lines and len(lines) == 1, proc.stderr[-2000:]
    assert "train.lr" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed command left files behind"


@pytest.mark.parametrize(
    "recipe, knobs, needle",
    [
        ("matryoshka", ["model.attention_dropout=0"], "model.attention_dropout"),
        ("matryoshka", ["model.attention_dropout=null", "model.hidden_dropout=0"], "model.hidden_dropout"),
        ("matryoshka", ["model.attention_dropout=null", "model.freeze_layers=1"], "model.freeze_layers"),
        ("matryoshka", ["model.attention_dropout=null", "model.freeze_embeddings=true"], "model.freeze_embeddings"),
        ("matryoshka", ["model.attention_dropout=null", "model.hidden_dropout=null", "model.gradient_checkpointing=true"], "model.gradient_checkpointing"),
        ("lora", ["lora.target_modules=[query,vlaue]"], "lora.target_modules: vlaue match no module"),
    ],
)
def test_a_knob_the_model_cannot_take_fails_before_data_or_base_evaluation(recipe, knobs, needle, inputs, tiny_bert,
                                                                          tmp_path, monkeypatch):
    """The model-dependent checks run right after the model loads: not after a minute of mining and
    base evaluation (the static model has no layers, attention or transformer; tiny BERT has no "vlaue")."""
    import importlib

    from trainer import run
    from trainer.data import shared
    from trainer.errors import CodetuneError

    def too_late(*args, **kwargs):
        pytest.fail("the run reached data loading or the base evaluation before its config was checked")

    monkeypatch.setattr(shared, "load_data_once", too_late)
    monkeypatch.setattr(run, "evaluate_base", too_late)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    model = ["model.name=" + str(tiny_bert), "model.preset=bge"] if recipe == "lora" else [f"model.name={inputs / 'static-model'}"]
    argv = [*model, f"output_dir={tmp_path / 'run'}", "loss.matryoshka_dims=[8]", "loss.matryoshka_weights=null", *knobs]
    with pytest.raises(CodetuneError, match=needle):
        importlib.import_module(f"recipes.{recipe}").main(argv)
    assert not (tmp_path / "run").exists()


# A value other than the default for each setting a recipe has no use for.
UNUSED = {
    "projection_head": {
        "model.gradient_checkpointing": "true", "model.freeze_embeddings": "true", "model.attention_dropout": "0.1",
        "model.hidden_dropout": "0.1", "model.freeze_layers": "1",
        "model.pca_rotation": "true", "model.pca_refit": "true", "data.hard_negatives": "2",
        "data.hard_negatives_window": "[5,20]", "loss.gather_across_devices": "false", "loss.symmetric": "true",
        "loss.teacher": "mpnet-base",
    },
    "lora": {"merge.alpha": "0.5", "model.freeze_embeddings": "true"},
}


@pytest.mark.parametrize("recipe, key", [(recipe, key) for recipe, keys in UNUSED.items() for key in keys])
def test_a_setting_the_recipe_does_not_use_is_refused_where_its_config_is_loaded(recipe, key):
    """Not a silent no-op: the recipe's config() (which `codetune train` calls before any worker
    starts) names the setting and the recipe. At its default the same setting is accepted."""
    from trainer.errors import CodetuneError
    from trainer.launch import load_recipe, recipe_path

    module = load_recipe(recipe_path(recipe))
    with pytest.raises(CodetuneError, match=rf"^{re.escape(key)}: .*: the {recipe} recipe does not use this setting \("):
        module.config([f"{key}={UNUSED[recipe][key]}"])
    default = functools.reduce(getattr, key.split("."), type(module.config([]))())
    module.config([f"{key}={json.dumps(default)}"])


def test_the_matryoshka_recipe_uses_every_setting_the_others_refuse():
    from trainer.launch import load_recipe, recipe_path

    module = load_recipe(recipe_path("matryoshka"))
    module.config([f"{key}={value}" for keys in UNUSED.values() for key, value in keys.items()])
