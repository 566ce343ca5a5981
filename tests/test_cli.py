"""The `codetune` command: each subcommand is its module's CLI, and `codetune train` launches a recipe
with accelerate, checking the config first and exiting with the recipe's own status."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_recipes import FIXTURE, pairs  # noqa: F401 -- the fixture is used by name

from trainer import cli, launch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
CPU_LAUNCH = ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def codetune(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**ENV, **(env or {})}, timeout=timeout)


def test_help_lists_every_command_with_examples():
    proc = codetune("--help")
    assert proc.returncode == 0
    for name in cli.COMMANDS:
        assert f"  {name} " in proc.stdout and f"codetune {name} " in proc.stdout, name
    train = codetune("train", "--help")
    assert train.returncode == 0 and "codetune train --multi_gpu --num_processes 8" in train.stdout
    assert "lora, matryoshka, projection_head" in train.stdout and "75 stopped on request" in train.stdout


def test_recipe_help_names_its_shipped_config():
    proc = codetune("train", "matryoshka", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "codetune train matryoshka --config bge train.lr=1e-5" in proc.stdout  # its docstring, in codetune terms
    assert f"default config: {ROOT / 'recipes' / 'configs' / 'matryoshka.yaml'}" in proc.stdout


def test_a_subcommand_is_its_modules_cli(tmp_path, capsys):
    """`codetune compare` prints what `python -m trainer.compare` prints and writes the same plot."""
    from trainer import compare

    metrics = {"32": {"ndcg@10": 0.5, "recall@10": 0.7}}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps({"before": {"data": "x", "metrics": metrics},
                                                                "after": {"data": "x", "metrics": metrics}}))
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert cli.main(["compare", *runs, "--plot", str(tmp_path / "one.png")]) == 0
    ours = capsys.readouterr().out
    assert compare.main([*runs, "--plot", str(tmp_path / "two.png")]) == 0
    assert ours.replace("one.png", "two.png") == capsys.readouterr().out
    assert (tmp_path / "one.png").stat().st_size > 0


def test_launcher_flags_go_before_the_recipe_and_shipped_configs_go_by_name():
    argv = ["--multi_gpu", "--num_processes", "2", "--main_process_port=29511", "matryoshka", "--config", "bge", "train.lr=1e-5"]
    flags, recipe, args = launch.split_launcher_flags(argv)
    assert (flags, recipe, args) == (argv[:4], "matryoshka", ["--config", "bge", "train.lr=1e-5"])
    shipped = launch.recipes_dir() / "configs" / "bge.yaml"
    assert launch.with_shipped_config(args) == ["--config", str(shipped), "train.lr=1e-5"]
    assert launch.with_shipped_config(["--config=lora"]) == [f"--config={launch.recipes_dir() / 'configs' / 'lora.yaml'}"]
    assert launch.with_shipped_config(["--config", "mine.yaml"]) == ["--config", "mine.yaml"]  # not shipped: as given


def test_one_exit_status_for_the_workers():
    assert launch._status_of([75, 75]) == 75
    assert launch._status_of([2, -15]) == 2  # the others were ended by torchrun after the first failed
    assert launch._status_of([-9]) == 137


def test_the_package_ships_every_module_and_the_recipes():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"codetune": "trainer.cli:main"}
    setuptools = project["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "trainer").rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"trainer.recipes"}  # a package left out would be missing when installed
    assert setuptools["package-dir"] == {"trainer.recipes": "recipes"}
    assert setuptools["package-data"]["trainer.recipes"] == ["configs/*.yaml"]


def recipe_args(model, out, data) -> list[str]:
    return [f"model.name={model}", "model.preset=bge", f"output_dir={out}", f"data.source={data}", f"data.eval={FIXTURE}",
            "loss.matryoshka_dims=[32,16]", "loss.matryoshka_weights=null", "train.batch_size=8", "train.max_steps=6", "train.checkpoint_every=0",
            "train.log_every=1", "merge.alpha=1.0"]


@pytest.mark.slow
def test_train_passes_a_stop_through_as_75_then_resumes_to_0(tiny_bert, pairs, tmp_path):  # noqa: F811
    """The status that tells a scheduler to requeue survives the launcher, which `accelerate launch` turns into 1."""
    out, stop = tmp_path / "run", tmp_path / "stop"
    stop.touch()  # a stop requested before the first step: a checkpoint of step 1, then 75
    proc = codetune("train", *CPU_LAUNCH, "matryoshka", *recipe_args(tiny_bert, out, pairs),
                    cwd=tmp_path, env={"CODETUNE_STOP_FILE": str(stop)})
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert "stopped at step 1 on request" in proc.stdout and "Traceback" not in proc.stderr
    assert (out / "checkpoints" / "latest").read_text() == "step-1"

    stop.unlink()
    done = codetune("train", *CPU_LAUNCH, "matryoshka", *recipe_args(tiny_bert, out, pairs), "resume_from_checkpoint=latest",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps == list(range(1, 7))


def test_the_python_api_page_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every block of docs/python-api.md, in a folder laid out as the blocks assume."""
    import re
    import shutil

    from trainer.data.mining import mine
    from trainer.data.splits import SplitConfig, split_mined, write_mined
    from trainer.models import embedded_default_path

    text = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    shutil.copytree(ROOT / "tests" / "fixtures" / "code_tree", tmp_path / "src")
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "final").symlink_to(embedded_default_path())  # a model folder, as a run leaves it
    mined = mine([tmp_path / "src"])
    write_mined(tmp_path / "data" / "myrepo", split_mined(mined, SplitConfig(test_fraction=0.5)), mined.report, SplitConfig(0.5))
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(block, {})
    evaluated, mined_line, hit = capsys.readouterr().out.strip().splitlines()[-3:]  # each block's print
    assert all(0 <= float(v) <= 1 for v in evaluated.split())
    assert int(mined_line.split()[0]) == len(mined.pairs)
    score, path, line = hit.split()
    assert 0 < float(score) <= 1 and int(line) >= 1 and Path(path).suffix in {".py", ".go", ".js", ".ts", ".java", ".rs"}
    assert (tmp_path / "data" / "mined" / "test" / "corpus.jsonl").is_file()
