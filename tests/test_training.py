"""The training loop: distributed == single process, GradCache == full batch, exact resume, NaN guard."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).parent / "train_worker.py"
ROOT = Path(__file__).resolve().parents[1]


def launch(model_dir, out, *overrides, processes=1, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        # --multi_gpu picks accelerate's torchrun launcher; on a CPU-only machine that is gloo.
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu" if processes > 1 else "--cpu",
        "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(WORKER), str(model_dir), f"output_dir={out}", "train.log_every=1", "train.lr=1e-3",
        # Adam's first step is lr * sign(gradient): with the default epsilon, float noise in a
        # near-zero gradient (1 process vs 2 sum in different orders) becomes a full lr step.
        "train.warmup_ratio=0", "train.adam_eps=1e-3", *overrides,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def weights(out):
    return torch.load(Path(out) / "weights.pt")


def assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=k)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("negatives,symmetric,teacher", [(0, False, False), (1, False, False), (1, True, False), (1, True, True)])
def test_two_processes_equal_one_with_double_batch(tiny_bert, tiny_roberta, tmp_path, monkeypatch, negatives, symmetric, teacher):
    steps = ["train.max_steps=2", f"train.hard_negatives={negatives}", "train.checkpoint_every=0", f"symmetric={symmetric}"]
    if teacher:  # a teacher's scores in the target: its embeddings are gathered like the student's
        steps.append(f"teacher={tiny_roberta}")
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache-one"))
    launch(tiny_bert, tmp_path / "one", "train.batch_size=8", *steps, processes=1)
    # Its own cache: the two processes encode the teacher's texts in shares and gather them.
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache-two"))
    launch(tiny_bert, tmp_path / "two", "train.batch_size=4", *steps, processes=2)
    if teacher:
        assert len(list((tmp_path / "cache-two" / "embeddings").glob("*.pt"))) == 2  # written once, by rank 0
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-5)
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"))
    # ...and the steps did move the weights, far beyond the tolerance above.
    from trainer.models import load_model

    start = load_model(str(tiny_bert), preset="bge").state_dict()
    moved = [k for k, v in weights(tmp_path / "one").items() if (v - start[k]).abs().max() > 1e-3]
    assert len(moved) > 0.8 * len(start)


@pytest.mark.distributed
@pytest.mark.slow
def test_without_gather_two_processes_differ(tiny_bert, tmp_path):
    """The equivalence above is not vacuous: local-only negatives give a different step."""
    steps = ["train.max_steps=1", "train.checkpoint_every=0"]
    launch(tiny_bert, tmp_path / "one", "train.batch_size=8", *steps, processes=1)
    launch(tiny_bert, tmp_path / "two", "train.batch_size=4", "gather=false", *steps, processes=2)
    assert losses(tmp_path / "one")[0] != pytest.approx(losses(tmp_path / "two")[0], rel=1e-3)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("teacher", [False, True])
def test_grad_cache_equals_full_batch_across_processes(tiny_bert, tiny_roberta, tmp_path, monkeypatch, teacher):
    """GradCache in chunks of 3 == the plain full batch, on one process and across two (with a teacher too)."""
    steps = ["train.max_steps=2", "train.checkpoint_every=0", "train.hard_negatives=1"]
    if teacher:
        steps.append(f"teacher={tiny_roberta}")
        monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    launch(tiny_bert, tmp_path / "full", *steps, "train.batch_size=8", processes=1)
    launch(tiny_bert, tmp_path / "cached1", *steps, "train.batch_size=8", "train.grad_cache_chunk=3", processes=1)
    launch(tiny_bert, tmp_path / "cached2", *steps, "train.batch_size=4", "train.grad_cache_chunk=3", processes=2)
    for run in ("cached1", "cached2"):
        assert losses(tmp_path / run) == pytest.approx(losses(tmp_path / "full"), rel=1e-5), run
        assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / run))


@pytest.mark.slow
def test_length_buckets_equal_one_padded_batch(tiny_bert, tmp_path):
    """Documents embedded in 3 length-sorted slices (less padding) give the step of one padded batch."""
    steps = ["train.max_steps=2", "train.checkpoint_every=0", "train.batch_size=8", "train.hard_negatives=1"]
    launch(tiny_bert, tmp_path / "one", *steps)
    launch(tiny_bert, tmp_path / "sliced", *steps, "train.length_buckets=3")
    launch(tiny_bert, tmp_path / "cached", *steps, "train.length_buckets=2", "train.grad_cache_chunk=5")
    for run in ("sliced", "cached"):
        assert losses(tmp_path / run) == pytest.approx(losses(tmp_path / "one"), rel=1e-5), run
        assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / run))


def test_source_groups_put_a_files_rows_together_and_pathless_rows_at_random():
    from trainer.data.batches import source_groups
    from trainer.errors import CodetuneError
    from trainer.loop import TrainConfig
    from trainer.sampler import plan_batches, text_keys

    rows = [{"query": f"q{i}", "positive": f"d{i}", "path": f"pkg/m{i % 6}.py"} for i in range(48)]
    groups = source_groups(rows, "file")
    batches = plan_batches(text_keys(rows, 0), 8, seed=0, epoch=0, groups=groups)
    assert sorted(i for b in batches for i in b) == list(range(48))
    # 8 rows per file and batches of 8: each batch is one whole file, in a seeded random order.
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert [groups[b[0]] for b in batches] != sorted(groups[b[0]] for b in batches)
    random_plan = plan_batches(text_keys(rows, 0), 8, seed=0, epoch=0)
    assert any(len({groups[i] for i in b}) > 1 for b in random_plan)
    assert source_groups(rows, "folder") == ["pkg"] * 48
    # half grouped: every row still once, about half of each batch from one file
    rows = [{"query": f"q{i}", "positive": f"d{i}", "path": f"m{i % 12}.py"} for i in range(192)]
    groups, keys = source_groups(rows, "file"), text_keys(rows, 0)
    mixed = plan_batches(keys, 16, seed=0, epoch=0, groups=groups, group_share=0.5)
    assert sorted(i for b in mixed for i in b) == list(range(192))

    def same_file(plan):  # mean size of a batch's largest same-file share
        return sum(max(map([groups[i] for i in b].count, groups)) for b in plan) / len(plan)

    assert same_file(plan_batches(keys, 16, seed=0, epoch=0)) < 5 < same_file(mixed) < 11
    # users' own pairs carry no path: each is its own group, and with none at all batches are random
    assert source_groups([{"query": "q", "positive": "d"}], "file") is None
    partly = source_groups([{"query": "q", "positive": "d"}, {"query": "r", "positive": "e", "path": "a.py"}], "file")
    assert partly[1] == "a.py" and partly[0] not in ("a.py", "")
    with pytest.raises(CodetuneError, match="train.group_by_source: 'module' must be file, folder or null"):
        TrainConfig(group_by_source="module")


@pytest.mark.parametrize("arch", ["bert-cls", "roberta-mean"])
def test_loss_falls(arch, tiny_bert, tiny_roberta, tmp_path):
    model, preset = (tiny_bert, "bge") if arch == "bert-cls" else (tiny_roberta, "codebert")
    launch(model, tmp_path / "run", f"preset={preset}", "train.max_steps=30", "train.batch_size=16", "train.checkpoint_every=0")
    curve = losses(tmp_path / "run")
    assert sum(curve[-3:]) / 3 < 0.8 * sum(curve[:3]) / 3, curve


def test_resume_is_exact(tiny_bert, tmp_path):
    """4 steps straight == the same run's step-2 checkpoint + resume + 2 steps."""
    common = ["train.batch_size=8", "train.max_steps=4", "train.checkpoint_every=2"]
    launch(tiny_bert, tmp_path / "straight", *common)
    ckpt = tmp_path / "straight" / "checkpoints" / "step-2"
    launch(tiny_bert, tmp_path / "resumed", *common, f"resume_from_checkpoint={ckpt}")
    assert losses(tmp_path / "resumed") == pytest.approx(losses(tmp_path / "straight")[2:], rel=1e-6)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"), atol=1e-6)


def test_stop_request_checkpoints_and_auto_resume_finishes(tiny_bert, tmp_path):
    common = ["train.batch_size=8", "train.max_steps=3", "train.checkpoint_every=0"]
    launch(tiny_bert, tmp_path / "straight", *common)
    stop = tmp_path / "stop"
    stop.touch()
    os.environ["CODETUNE_STOP_FILE"] = str(stop)
    try:
        proc = launch(tiny_bert, tmp_path / "run", *common, "resume_from_checkpoint=auto", check=False)
    finally:
        del os.environ["CODETUNE_STOP_FILE"]
    # The worker exits 75; `accelerate launch` reports any child failure as 1.
    assert proc.returncode != 0 and "exit status 75" in proc.stderr, proc.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-1"
    launch(tiny_bert, tmp_path / "run", *common, "resume_from_checkpoint=auto")
    assert losses(tmp_path / "run") == pytest.approx(losses(tmp_path / "straight"), rel=1e-6)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "run"), atol=1e-6)


def test_existing_run_is_not_overwritten(tiny_bert, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    proc = launch(tiny_bert, out, "train.max_steps=1", check=False)
    assert proc.returncode != 0 and "holds files that are not a codetune run" in proc.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    run = tmp_path / "finished"
    launch(tiny_bert, run, "train.max_steps=2", "train.checkpoint_every=1")
    proc = launch(tiny_bert, run, "train.max_steps=2", check=False)
    assert proc.returncode != 0 and "already holds a run" in proc.stderr


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_bert, tmp_path):
    out = tmp_path / "run"
    proc = launch(tiny_bert, out, "train.batch_size=8", "train.max_steps=5", "train.checkpoint_every=2", "poison_step=3", check=False)
    assert proc.returncode != 0
    assert "loss is nan at step 3" in proc.stderr and "checkpoints/step-2" in proc.stderr
    assert (out / "checkpoints" / "latest").read_text() == "step-2"
    assert [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())] == [1, 2]


def test_a_batch_the_rows_cannot_fill_fails_early_naming_the_cause_and_a_size_that_works():
    """Shared hard negatives, not the row count, limit the batch (docs/data.md's flow on a small package)."""
    import re
    from dataclasses import replace

    from trainer.data.batches import check_batches
    from trainer.errors import CodetuneError
    from trainer.loop import TrainConfig

    n = 20
    rows = [{"query": f"q{i}", "positive": f"p{i}", "negatives": [f"p{(i + k) % n}" for k in (1, 2, 3)]} for i in range(n)]
    cfg = TrainConfig(batch_size=8, hard_negatives=3)
    with pytest.raises(CodetuneError) as err:
        check_batches(rows, cfg, world=1)
    message = str(err.value)
    assert "20 rows whose 3 hard negatives each overlap" in message
    largest = int(re.search(r"train\.batch_size=(\d+)", message).group(1))
    assert 2 <= largest < 8
    check_batches(rows, replace(cfg, batch_size=largest), world=1)  # the size it names works
    with pytest.raises(CodetuneError):
        check_batches(rows, replace(cfg, batch_size=largest + 1), world=1)
    check_batches(rows, replace(cfg, batch_size=8, hard_negatives=0), world=1)  # without negatives 8 of 20 fit


def test_a_batch_size_the_check_accepts_lasts_the_whole_grouped_run():
    """Batches by file draw the rows whose negatives clash most side by side: the check plans the
    run as training will, every epoch, so a size it accepts never fails mid-run (docs/data.md's flow
    on `click` passed an ungrouped one-epoch check at 13 and failed at step 7)."""
    import random
    from dataclasses import replace

    from trainer.data.batches import check_batches, run_batches, total_steps, with_negatives
    from trainer.errors import CodetuneError
    from trainer.loop import TrainConfig

    rng = random.Random(0)
    rows = []
    for f, j in itertools.product(range(12), range(8)):  # 12 files of 8 functions, negatives from the same file
        negatives = [f"code {f}.{k}" for k in rng.sample([k for k in range(8) if k != j], 3)]
        for form in ("doc", "name", "short"):  # query forms share the positive
            rows.append({"query": f"{form} {f}.{j}", "positive": f"code {f}.{j}", "negatives": negatives, "path": f"m{f}.py"})
    cfg = TrainConfig(batch_size=32, hard_negatives=3, group_by_source="file", source_share=0.5, epochs=1.3)
    accepted = []
    for b in range(2, 17):
        c = replace(cfg, batch_size=b)
        try:
            check_batches(rows, c, world=1)
        except CodetuneError:
            continue
        accepted.append(b)
        planned, c = with_negatives(rows, c)[:2]
        batches = run_batches(planned, c, world=1)
        for _ in range(total_steps(c, len(planned), 1)):
            assert len(next(batches)) == b
    assert accepted and accepted == list(range(2, max(accepted) + 1)) and max(accepted) < 16


def launch_data_worker(source, out, *model, processes=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(Path(__file__).parent / "data_worker.py"), str(source), str(out), *map(str, model)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_the_process_group_is_destroyed_before_the_interpreter_exits(tmp_path):
    """Left to interpreter teardown, gloo's threads can abort a process whose work is done (SIGABRT)."""
    script = f"""
import atexit, sys
import torch.distributed as dist
sys.path.insert(0, {str(ROOT)!r})
from trainer.distributed import leave_at_exit
dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0, world_size=1)
leave_at_exit()
leave_at_exit()  # registered once: a second call does not destroy twice
print(dist.is_initialized())
atexit._run_exitfuncs()
print(dist.is_initialized())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "False"]


def test_two_processes_mine_a_tree_once_and_hold_identical_rows(tmp_path):
    tree = Path(__file__).parent / "fixtures" / "code_tree"
    proc = launch_data_worker(tree, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mined.log").read_text().splitlines() == ["mined"]  # rank 0 only
    rows0, rows1 = (json.loads((tmp_path / f"rows-{r}.json").read_text()) for r in (0, 1))
    assert rows0 and rows0 == rows1


@pytest.mark.distributed
def test_two_processes_share_the_hard_negative_encoding_and_get_what_one_process_gets(tmp_path):
    from trainer.data import DataConfig, load_training_data
    from trainer.models import load_model

    tree = Path(__file__).parent / "fixtures" / "code_tree"
    proc = launch_data_worker(tree, tmp_path, "default")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mined.log").read_text().splitlines() == ["mined"]  # the tree: rank 0 only
    encoded = [line.split() for line in (tmp_path / "encoded.log").read_text().splitlines()]
    assert sorted(int(rank) for rank, _, _ in encoded) == [0, 1]  # each rank encoded once ...
    assert sum(int(share) for _, share, _ in encoded) == int(encoded[0][2])  # ... its own share of the documents
    rows0, rows1 = (json.loads((tmp_path / f"rows-{r}.json").read_text()) for r in (0, 1))
    config = DataConfig(source=str(tree), test_fraction=0.5, seed=3, hard_negatives=2, hard_negatives_window=[0, 10])
    alone = load_training_data(config, tmp_path / "alone", load_model("default")).train.to_list()
    assert any(r["negatives"] for r in alone)
    assert rows0 == rows1 == alone


def test_a_bad_source_under_two_processes_ends_every_rank_with_its_one_line(tmp_path):
    proc = launch_data_worker(tmp_path / "no-such-tree", tmp_path)
    assert proc.returncode != 0
    # Each rank says it, none waits for the collective timeout. Counted, not split into lines: the two
    # ranks share stderr and CI once saw both lines written back to back before either newline.
    assert proc.stderr.count("error: data.source: ") == 2, proc.stderr[-3000:]


def test_frozen_embeddings_keep_the_base_values_while_the_layers_train(tiny_bert):
    from trainer.losses import MatryoshkaInfoNCE
    from trainer.models import ModelConfig, load_model
    from trainer.models.memory import prepare_for_training

    model = load_model(str(tiny_bert), preset="bge")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_for_training(model, ModelConfig(freeze_embeddings=True))
    table = model[0].auto_model.get_input_embeddings().weight
    assert not table.requires_grad
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    texts = [f"def f{i}(x):\n    return x * {i}" for i in range(8)]
    embed = lambda t: model(model.tokenize(t))["sentence_embedding"]  # noqa: E731
    total, _ = MatryoshkaInfoNCE([32, 16], gather=False)(embed([f"multiply by {i}" for i in range(8)]), embed(texts))
    total.backward()
    optimizer.step()
    after = model.state_dict()
    name = next(k for k in after if k.endswith("word_embeddings.weight"))
    assert torch.equal(after[name], before[name])
    moved = [k for k in after if k != name and after[k].is_floating_point() and not torch.equal(after[k], before[k])]
    assert any("encoder.layer" in k for k in moved), moved


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_frozen_lower_layers_get_no_gradient_and_keep_the_base_values(family, tmp_path):
    from tests.conftest import make_tiny_bert, make_tiny_roberta
    from trainer.losses import MatryoshkaInfoNCE
    from trainer.models import ModelConfig, load_model
    from trainer.models.memory import prepare_for_training

    folder = {"bert": make_tiny_bert, "roberta": make_tiny_roberta}[family](tmp_path / family)
    model = load_model(str(folder), preset={"bert": "bge", "roberta": "codebert"}[family])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_for_training(model, ModelConfig(freeze_layers=1))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    embed = lambda t: model(model.tokenize(t))["sentence_embedding"]  # noqa: E731
    total, _ = MatryoshkaInfoNCE([32, 16], gather=False)(
        embed([f"multiply by {i}" for i in range(8)]), embed([f"def f{i}(x):\n    return x * {i}" for i in range(8)]))
    total.backward()
    optimizer.step()
    after = model.state_dict()
    frozen = [k for k in after if ".embeddings." in k or ".encoder.layer.0." in k]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)
    assert all(p.grad is None for n, p in model.named_parameters() if ".encoder.layer.0." in n)
    moved = [k for k in after if ".encoder.layer.1." in k and not torch.equal(after[k], before[k])]
    assert moved


def test_freezing_every_layer_names_the_key(tiny_bert):
    from trainer.errors import CodetuneError
    from trainer.models import ModelConfig, load_model
    from trainer.models.memory import check_training_settings

    model = load_model(str(tiny_bert), preset="bge")
    layers = model[0].auto_model.config.num_hidden_layers
    with pytest.raises(CodetuneError, match=rf"^model\.freeze_layers: {layers} must be below the model's {layers} layers"):
        check_training_settings(model, ModelConfig(freeze_layers=layers))


@pytest.mark.parametrize("family", ["bert", "roberta", "qwen3"])
def test_attention_dropout_zero_makes_training_forwards_deterministic_and_fused(family, tmp_path):
    from torch.profiler import profile

    from tests.conftest import make_tiny_bert, make_tiny_qwen3, make_tiny_roberta
    from trainer.models import load_model
    from trainer.models.memory import set_attention_dropout

    make = {"bert": make_tiny_bert, "roberta": make_tiny_roberta, "qwen3": make_tiny_qwen3}[family]
    folder = make(tmp_path / family, dropout=0.5)
    model = load_model(str(folder), preset={"bert": "bge", "roberta": "codebert", "qwen3": "qwen3-embedding"}[family])
    hf = model[0].auto_model
    for parent in hf.modules():  # leave dropout on the attention probabilities only
        if not type(parent).__name__.endswith("SelfAttention"):
            for child in parent.children():
                if isinstance(child, torch.nn.Dropout):
                    child.p = 0.0
    model.train()
    features = model.tokenize([f"def f{i}(x):\n    return x * {i} + y" for i in range(4)])
    embed = lambda: model(dict(features))["sentence_embedding"]  # noqa: E731
    torch.manual_seed(0)
    assert not torch.allclose(embed(), embed())
    assert set_attention_dropout(model, 0.0) > 0
    assert torch.equal(embed(), embed())
    with profile() as prof:
        embed().sum().backward()
    if hf.config._attn_implementation == "sdpa":
        assert any("flash_attention_for_cpu" in e.key for e in prof.key_averages())
    model.save(str(tmp_path / "saved"))
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved.get("attention_probs_dropout_prob", saved.get("attention_dropout")) == 0.5


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_hidden_dropout_zero_makes_training_forwards_deterministic_and_leaves_attention_dropout(family, tmp_path):
    from tests.conftest import make_tiny_bert, make_tiny_roberta
    from trainer.models import load_model
    from trainer.models.memory import set_attention_dropout, set_hidden_dropout

    folder = {"bert": make_tiny_bert, "roberta": make_tiny_roberta}[family](tmp_path / family, dropout=0.5)
    model = load_model(str(folder), preset={"bert": "bge", "roberta": "codebert"}[family])
    model.train()
    features = model.tokenize([f"def f{i}(x):\n    return x * {i} + y" for i in range(4)])
    embed = lambda: model(dict(features))["sentence_embedding"]  # noqa: E731
    torch.manual_seed(0)
    set_attention_dropout(model, 0.0)
    assert not torch.allclose(embed(), embed())  # the hidden dropouts alone still draw masks
    layers = model[0].auto_model.config.num_hidden_layers
    assert set_hidden_dropout(model, 0.0) == 1 + 2 * layers  # embeddings, attention output, feed-forward output
    assert torch.equal(embed(), embed())
    set_attention_dropout(model, 0.5)  # the attention dropout is a separate knob
    assert not torch.allclose(embed(), embed())


def test_hidden_dropout_leaves_lora_dropout_to_its_own_knob(tiny_bert):
    from peft import LoraConfig, get_peft_model

    from trainer.models import load_model
    from trainer.models.memory import set_hidden_dropout

    model = load_model(str(tiny_bert), preset="bge")
    model[0].auto_model = get_peft_model(model[0].auto_model, LoraConfig(r=2, lora_dropout=0.3, target_modules=["query"]))
    layers = model[0].auto_model.config.num_hidden_layers
    assert set_hidden_dropout(model, 0.0) == 1 + 2 * layers
    adapters = [m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n]
    assert adapters == [0.3] * layers


def test_hidden_dropout_on_a_model_without_it_names_the_key(tmp_path):
    from tests.conftest import make_tiny_qwen3
    from trainer.errors import CodetuneError
    from trainer.models import ModelConfig, load_model
    from trainer.models.memory import check_training_settings

    model = load_model(str(make_tiny_qwen3(tmp_path / "qwen3")), preset="qwen3-embedding")
    with pytest.raises(CodetuneError, match=r"^model\.hidden_dropout: no hidden dropout found"):
        check_training_settings(model, ModelConfig(hidden_dropout=0.0))


def test_attention_dropout_on_a_model_without_attention_names_the_key():
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding
    from tokenizers import Tokenizer, models

    from trainer.errors import CodetuneError
    from trainer.models import ModelConfig
    from trainer.models.memory import prepare_for_training

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "def": 1}, unk_token="[UNK]"))
    model = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=8)], device="cpu")
    with pytest.raises(CodetuneError, match=r"^model\.attention_dropout: no attention dropout found"):
        prepare_for_training(model, ModelConfig(attention_dropout=0.0))


@pytest.mark.parametrize("family", ["bert", "roberta", "qwen3"])
def test_eager_attention_below_a_length_gives_the_fused_kernels_embeddings_and_gradients(family, tmp_path):
    from torch.profiler import profile

    from tests.conftest import make_tiny_bert, make_tiny_qwen3, make_tiny_roberta
    from trainer.models import load_model
    from trainer.models.forward import PairEncoder

    make = {"bert": make_tiny_bert, "roberta": make_tiny_roberta, "qwen3": make_tiny_qwen3}[family]
    model = load_model(str(make(tmp_path / family)), preset={"bert": "bge", "roberta": "codebert", "qwen3": "qwen3-embedding"}[family])
    model.float()  # the decoder preset loads bf16, whose rounding would hide a real difference
    config = model[0].auto_model.config
    assert config._attn_implementation == "sdpa"
    short = model.tokenize(["def f(x): return x", "sort a list"])
    long = model.tokenize([f"def g{i}(a, b):\n    return [a * k + b for k in range({i})]" * 3 for i in range(2)])
    assert short["input_ids"].shape[1] < 16 < long["input_ids"].shape[1]

    def step(eager_max_tokens: int):
        encoder = PairEncoder(model, eager_max_tokens)
        model.zero_grad()
        with profile() as prof:
            q, d = encoder(dict(short), [dict(long)])
            (q.sum() + 2 * d.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        fused = sum(e.count for e in prof.key_averages() if "flash_attention_for_cpu" in e.key and "backward" not in e.key)
        return q.detach(), d.detach(), grads, fused

    q0, d0, g0, fused0 = step(0)
    q1, d1, g1, fused1 = step(16)  # the short batch eager, the long one fused
    assert config._attn_implementation == "sdpa"  # switched back after each forward
    layers = fused0 // 2
    assert layers > 0 and fused1 == layers  # only the long batch's layers ran the fused kernel
    torch.testing.assert_close(q1, q0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(d1, d0, atol=1e-5, rtol=1e-4)
    assert g1.keys() == g0.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=name)
