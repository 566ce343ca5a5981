"""Every process a share: 2 real gloo processes evaluate and mine negatives exactly as 1 does.

Tiny random models score many documents nearly alike, so any difference in how a text is batched
(padding) or how ties are broken would show up here as a different ranking.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.retrieval import encode, encode_share, length_batches, normalize_truncate, top_k

ROOT = Path(__file__).resolve().parents[1]
TREE = Path(__file__).parent / "fixtures" / "code_tree"
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no"]


def run(cmd: list[str], **env_vars: str) -> subprocess.CompletedProcess:
    # One thread per process in both runs, so a sum is added in the same order in each.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **env_vars}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def one_and_two(module_args: list[str], out_flag: str, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """Run ``python -m ...`` and ``accelerate launch --multi_gpu --num_processes 2 -m ...``; their output paths."""
    one, two = tmp_path / f"one-{name}", tmp_path / f"two-{name}"
    run([sys.executable, "-m", *module_args, out_flag, str(one)])
    run([*LAUNCH, "--multi_gpu", "--num_processes", "2", "-m", *module_args, out_flag, str(two)])
    return one, two


@pytest.fixture(scope="module")
def tiny_st(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT saved as a sentence-transformers folder, so the CLIs load it by path alone."""
    from trainer.models import load_model

    folder = tmp_path_factory.mktemp("tiny-st")
    load_model(str(tiny_bert), preset="bge").save(str(folder))
    return folder


def lexicographic_top_k(q, d, k):
    """The reference: every score sorted by (score descending, document position ascending)."""
    scores = (q @ d.T).tolist()
    ids = [sorted(range(len(row)), key=lambda j: (-row[j], j))[:k] for row in scores]
    return torch.tensor([[row[j] for j in r] for row, r in zip(scores, ids)]), torch.tensor(ids)


@pytest.mark.parametrize("q_chunk,d_chunk", [(1, 1), (2, 5), (3, 7), (100, 1000)])
def test_ties_go_to_the_earlier_document_whatever_the_blocks(q_chunk, d_chunk):
    g = torch.Generator().manual_seed(0)
    distinct = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    d = distinct[torch.randint(0, 4, (40,), generator=g)]  # 40 documents, 4 embeddings: ties everywhere
    q = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    scores, ids = top_k(q, d, k=13, query_chunk=q_chunk, doc_chunk=d_chunk)  # 13 cuts through a tie
    ref_scores, ref_ids = lexicographic_top_k(q, d, 13)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores)


def test_a_share_encodes_its_texts_in_the_batches_one_process_uses(tiny_bert):
    from trainer.models import load_model

    model = load_model(str(tiny_bert), preset="bge")
    texts = [("def f(x):\n    return x" + " + x" * (i % 7)) + f"  # {i}" for i in range(37)]
    whole = encode(model, texts, "document", batch_size=4)  # (37, D)
    shares = [encode_share(model, texts, "document", 4, rank, 3) for rank in range(3)]
    positions = torch.cat([s.positions for s in shares])
    assert sorted(positions.tolist()) == list(range(37))  # each text in exactly one share
    assert max(len(s.positions) for s in shares) - min(len(s.positions) for s in shares) <= 4  # a third each
    for share in shares:
        assert torch.equal(share.embeddings, whole[share.positions])  # bit for bit: same batch, same padding
    assert len(length_batches(texts, 4)) == 10


def test_an_fp16_corpus_only_reorders_near_ties():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(20, 64, generator=g), torch.randn(3000, 64, generator=g)
    s32, i32 = top_k(q, d, 50)
    s16, i16 = top_k(q, d.half(), 50)
    exact = normalize_truncate(q) @ normalize_truncate(d).T  # (20, 3000) fp32 scores
    assert (exact.gather(1, i16) - s32).abs().max() < 1e-3  # rank by rank, what fp16 picks is as good
    assert (s16 - s32).abs().max() < 1e-3
    assert (i16 == i32).float().mean() > 0.9  # and mostly the very same documents


@pytest.mark.distributed
@pytest.mark.slow
def test_evaluate_cli_on_two_processes_writes_what_one_writes(beir_code, tmp_path):
    # The real default model: a random tiny one ranks these near chance, which would compare noise.
    args = ["trainer.evaluate", "--model", "default", "--data", str(beir_code), "--dims", "384", "64",
            "--batch-size", "16"]
    one, two = one_and_two(args, "--output", tmp_path, "eval.json")
    one, two = json.loads(one.read_text()), json.loads(two.read_text())
    assert one["metrics"]["384"]["ndcg@10"] > 0.3  # a ranking, not noise, is being compared
    for dim, metrics in one["metrics"].items():
        assert two["metrics"][dim] == pytest.approx(metrics, abs=1e-4)


@pytest.mark.distributed
@pytest.mark.slow
def test_negatives_cli_on_two_processes_writes_what_one_writes(tiny_st, tmp_path):
    from trainer.data.mining import mine

    source = tmp_path / "train.jsonl"
    source.write_text("".join(json.dumps(p.to_row()) + "\n" for p in mine([TREE]).pairs))
    args = ["trainer.data", "negatives", "--model", str(tiny_st), "--data", str(source), "--window", "1", "6",
            "--per-query", "2", "--batch-size", "4"]
    one, two = one_and_two(args, "--out", tmp_path, "negatives.jsonl")
    assert one.read_text() == two.read_text()
    rows = [json.loads(line) for line in one.read_text().splitlines()]
    assert sum(len(r["negatives"]) for r in rows) >= len(rows)  # negatives were found, and agree


def launch_eval_worker(model_dir, source, out, processes):
    out.mkdir()
    launcher = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    # Each launch its own cache of base scores: the 2-process one must encode, not read what the 1-process one kept.
    run([*LAUNCH, *launcher, "--num_processes", str(processes), str(ROOT / "tests" / "eval_worker.py"),
         str(model_dir), str(source), str(out)], CODETUNE_CACHE=str(out / "cache"))
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(processes)]


@pytest.mark.distributed
@pytest.mark.slow
def test_recipe_evaluation_uses_every_rank_and_scores_what_one_process_scores(tiny_bert, beir_code, tmp_path):
    from trainer.data.beir import load_beir

    (one,) = launch_eval_worker(tiny_bert, beir_code, tmp_path / "one", 1)
    ranks = launch_eval_worker(tiny_bert, beir_code, tmp_path / "two", 2)
    for dim, metrics in one["metrics"].items():
        assert ranks[0]["metrics"][dim] == pytest.approx(metrics, abs=1e-4)
    assert ranks[1]["metrics"] is None  # metrics are the main process's to log and save
    # Each rank encoded about half of the queries and half of the corpus, and together all of them.
    for kind, total in (("query", one["queries"]), ("document", one["documents"])):
        shares = [r["counts"][kind] for r in ranks]
        assert one["counts"][kind] == sum(shares) == total
        assert all(abs(s - total / 2) <= 8 for s in shares), shares  # batch_size=8: one batch apart at most
    # A resumed run reuses eval_before.json on every rank: no rank encodes, none waits on another.
    assert all(r["resumed_counts"] == {"query": 0, "document": 0} for r in [one, *ranks])
    assert ranks[0]["resumed_metrics"] == ranks[0]["metrics"]
    # So does another run of the same model on the same data (the user's cache): no rank encodes.
    assert all(r["cached_counts"] == {"query": 0, "document": 0} for r in [one, *ranks])
    assert ranks[0]["cached_metrics"] == ranks[0]["metrics"] and ranks[1]["cached_metrics"] is None
    # The held-out set reached rank 1 in memory, equal to the copy written to the run folder.
    written = load_beir(tmp_path / "two" / "run" / "data" / "eval").fingerprint()
    assert {r["fingerprint"] for r in ranks} == {written} == {one["fingerprint"]}
