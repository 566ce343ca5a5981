"""Nothing the user had is lost and nothing in a checkpoint runs code: overwrite, failed setups, planted pickles."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from test_recipes import run_recipe
from test_training import launch, weights

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_run(folder: Path) -> dict[str, bytes]:
    """A folder laid out as a finished codetune run (marker, config, checkpoint, final model, eval.json)."""
    (folder / "checkpoints" / "step-4").mkdir(parents=True)
    (folder / "checkpoints" / "step-4" / "trainer_state.json").write_text('{"step": 4}')
    (folder / "checkpoints" / "latest").write_text("step-4")
    (folder / "final").mkdir()
    (folder / "final" / "modules.json").write_text("[]")
    (folder / "eval.json").write_text('{"after": 0.9}')
    (folder / "config.yaml").write_text("model: {}\n")
    (folder / ".codetune-run").write_text('{"recipe": "matryoshka"}')
    return snapshot(folder)


def recipe_cli(*overrides):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "recipes" / "matryoshka.py"), *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def test_overwrite_with_a_typo_keeps_the_finished_run(tmp_path):
    out = tmp_path / "done"
    before = finished_run(out)
    proc = recipe_cli(f"output_dir={out}", "overwrite=true", "model.name=./typo-model")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().startswith("error: model './typo-model'") and "\n" not in proc.stderr.strip()
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done"]  # nothing moved aside and left behind


def test_overwrite_never_touches_a_folder_that_is_not_a_run(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "config.yaml").write_text("mine: true\n")  # a config of the user's own is not a run
    proc = recipe_cli(f"output_dir={out}", "overwrite=true", "data.source=stdlib")
    assert proc.returncode == 2
    assert "holds files that are not a codetune run" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(out) == {"config.yaml": b"mine: true\n", "notes.txt": b"keep me"}


def test_a_failed_setup_leaves_nothing_behind(tmp_path):
    out = tmp_path / "run"
    proc = recipe_cli(f"output_dir={out}", f"data.source={tmp_path / 'no-such-tree'}")
    assert proc.returncode == 2 and "data.source" in proc.stderr
    assert not out.exists()  # so the corrected command is not refused as "already holds a run"


@pytest.mark.slow
def test_overwrite_replaces_a_run_only_once_the_new_one_has_saved(tiny_bert, tmp_path):
    rows = tmp_path / "pairs.jsonl"
    from train_worker import fixture_rows

    rows.write_text("".join(json.dumps(r) + "\n" for r in fixture_rows()))
    out = tmp_path / "run"
    before = finished_run(out)
    # A failure after the folder was prepared (an unreadable data file) puts the old run back.
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    proc = run_recipe("matryoshka.py", tiny_bert, "bge", out, bad, "overwrite=true", "tracking.wandb=disabled", check=False)
    assert proc.returncode != 0 and "bad.jsonl:1: malformed JSON" in proc.stderr
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # A run that completes replaces it, and the old copy is gone.
    run_recipe("matryoshka.py", tiny_bert, "bge", out, rows, "overwrite=true", "tracking.wandb=disabled", "train.max_steps=2")
    assert json.loads((out / "eval.json").read_text()) != {"after": 0.9}
    assert not (out / "checkpoints" / "step-4").exists() and (out / "final" / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class _Exploit:
    """Unpickling this runs code: it writes a file (the probe's crafted checkpoint ran a shell command)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


@pytest.mark.slow
def test_resume_never_unpickles_code_from_a_checkpoint(tiny_bert, tmp_path):
    common = ["train.batch_size=8", "train.max_steps=4", "train.checkpoint_every=2"]
    launch(tiny_bert, tmp_path / "straight", *common)
    out = tmp_path / "run"
    launch(tiny_bert, out, *common)
    (out / "weights.pt").unlink()
    ckpt = out / "checkpoints" / "step-2"
    assert not list(ckpt.glob("custom_checkpoint_*.pkl"))  # the scheduler is JSON in trainer_state.json
    assert "scheduler" in json.loads((ckpt / "trainer_state.json").read_text())
    marker = tmp_path / "pwned"

    # A planted custom_checkpoint pickle (where accelerate keeps registered objects) is never read:
    # the run resumes exactly, and the code in it did not run.
    (ckpt / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Exploit(marker)))
    launch(tiny_bert, out, *common, "resume_from_checkpoint=latest")  # step 2 -> 4
    assert not marker.exists()
    # Steps 3 and 4 ran twice (after the checkpoint, then after the resume); the log has each once.
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    from test_training import assert_same_weights

    assert_same_weights(weights(tmp_path / "straight"), weights(out), atol=1e-6)

    # A pickle with code in a file that is read (the optimizer state) is refused with one line.
    import torch

    torch.save({"state": _Exploit(marker)}, ckpt / "optimizer.bin")
    proc = launch(tiny_bert, out, *common, f"resume_from_checkpoint={out / 'checkpoints' / 'step-2'}", check=False)
    assert proc.returncode != 0 and "refused to load a file that is not plain tensors" in proc.stderr
    assert not marker.exists()


def test_embedding_cache_never_unpickles_code(tiny_bert, tmp_path, monkeypatch):
    from trainer.embedding_cache import cached_encode
    from trainer.models import load_model

    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    model = load_model(str(tiny_bert), preset="bge")
    texts = ["parse a config file", "open a socket"]
    first, hit = cached_encode(model, texts, "query")
    assert not hit
    (path,) = (tmp_path / "cache" / "embeddings").glob("*.pt")
    import torch

    torch.save({"e": _Exploit(tmp_path / "pwned")}, path)  # same name, planted content
    again, hit = cached_encode(model, texts, "query")
    assert not (tmp_path / "pwned").exists()
    assert not hit  # refused, so encoded afresh (and the cache file rewritten)
    torch.testing.assert_close(again, first)
    assert cached_encode(model, texts, "query")[1]


def test_resume_with_other_hyperparameters_is_refused(tiny_bert, tmp_path):
    out = tmp_path / "run"
    launch(tiny_bert, out, "train.batch_size=8", "train.max_steps=2", "train.checkpoint_every=1")
    saved = (out / "config.yaml").read_text()
    proc = launch(tiny_bert, out, "train.batch_size=8", "train.max_steps=2", "train.checkpoint_every=1",
                  "train.lr=0.5", "resume_from_checkpoint=latest", check=False)
    assert proc.returncode != 0
    assert "was started with other settings: train.lr (0.001 -> 0.5)" in proc.stderr
    assert (out / "config.yaml").read_text() == saved  # never claims values that were not used
    # What does not change the trajectory may change: logging and checkpoint cadence.
    launch(tiny_bert, out, "train.batch_size=8", "train.max_steps=2", "train.checkpoint_every=2",
           "train.log_every=2", "resume_from_checkpoint=latest")


def test_a_live_run_holds_its_folder_and_a_dead_one_does_not(tmp_path):
    import fcntl

    out = tmp_path / "run"
    finished_run(out)
    lock = (out / ".codetune-lock").open("a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live run holds it
    lock.write("12345")
    lock.flush()
    before = snapshot(out)
    # A source that exists but holds no code: its error can only come after the folder was taken.
    empty = tmp_path / "empty-tree"
    empty.mkdir()
    proc = recipe_cli(f"output_dir={out}", "overwrite=true", f"data.source={empty}")
    assert proc.returncode == 2 and "another run is using it (pid 12345)" in proc.stderr
    assert snapshot(out) == before
    lock.close()  # the run died: the kernel released its lock, and the file alone holds nothing
    proc = recipe_cli(f"output_dir={out}", "resume_from_checkpoint=latest", f"data.source={empty}")
    assert "another run" not in proc.stderr and "data.source" in proc.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KB tmpfs: room for a run's small files, not for a checkpoint of the tiny model."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_temporary_folder(tiny_bert, tmp_path, small_disk):
    from train_worker import fixture_rows

    rows = tmp_path / "pairs.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in fixture_rows()))
    out = small_disk / "run"
    proc = recipe_cli(
        f"model.name={tiny_bert}", "model.preset=bge", f"output_dir={out}", f"data.source={rows}",
        f"data.eval={ROOT / 'tests' / 'fixtures' / 'beir_code'}", "loss.matryoshka_dims=[32,16]", "loss.matryoshka_weights=null", "train.batch_size=8",
        "train.max_steps=3", "train.checkpoint_every=1", "mixed_precision=no",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.replace("\r", "\n").splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: checkpoint {out}/checkpoints/step-1: disk full (") and "MB free on" in line
    assert "Traceback" not in proc.stderr
    assert not list((out / "checkpoints").glob(".step-*")) if (out / "checkpoints").exists() else True


def test_embedding_cache_keys_bf16_apart_from_fp32(tiny_bert, tmp_path, monkeypatch):
    import torch

    from trainer.embedding_cache import cached_encode
    from trainer.models import load_model

    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    model = load_model(str(tiny_bert), preset="bge")
    texts = ["parse a config file", "open a socket"]
    fp32, _ = cached_encode(model, texts, "query")
    bf16, hit = cached_encode(model, texts, "query", compute="bf16")
    assert not hit and bf16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(bf16, fp32).min() > 0.99
    assert cached_encode(model, texts, "query", compute="bf16")[1] and cached_encode(model, texts, "query")[1]
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.pt"))) == 2
