"""The base model's scores kept across runs: the same model on the same data hits, anything that moves a score misses."""

import json

import pytest
import torch
from test_recipes import FIXTURE, pairs, run_recipe  # noqa: F401 -- the fixture is used by name

from trainer import score_cache
from trainer.data.beir import load_beir
from trainer.models import load_model


def test_the_model_identity_follows_what_the_embeddings_depend_on(tiny_bert, tiny_roberta):
    model = load_model(str(tiny_bert), preset="bge")
    same = score_cache.model_identity(model)
    assert score_cache.model_identity(load_model(str(tiny_bert), preset="bge")) == same  # loaded again
    model.encode_document(["def f(x):\n    return x"] * 3)  # an encode sets the tokenizer's padding and truncation
    assert score_cache.model_identity(model) == same
    assert score_cache.model_identity(load_model(str(tiny_bert), preset="codebert")) != same  # mean pooling, no prompt
    assert score_cache.model_identity(load_model(str(tiny_roberta), preset="bge")) != same
    shorter = load_model(str(tiny_bert), preset="bge")
    shorter.max_seq_length = 64
    assert score_cache.model_identity(shorter) != same
    tuned = load_model(str(tiny_bert), preset="bge")
    with torch.no_grad():
        tuned[0].auto_model.encoder.layer[1].output.dense.weight.mul_(
            1.001
        )  # every value moves a little, as in training
    assert score_cache.model_identity(tuned) != same


def test_the_cache_key_follows_the_data_its_order_and_the_evaluation_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path))
    data = load_beir(FIXTURE)
    key = score_cache.cache_path("model", data, [32, 16], 64, "cpu")
    assert key.parent == tmp_path / "base-scores" and key == score_cache.cache_path(
        "model", load_beir(FIXTURE), [32, 16], 64, "cpu"
    )
    changed = load_beir(FIXTURE)
    qid = next(iter(changed.qrels))
    changed.queries[qid] += " again"
    reordered = load_beir(FIXTURE)
    reordered.corpus = dict(reversed(reordered.corpus.items()))
    others = [
        score_cache.cache_path("other model", data, [32, 16], 64, "cpu"),
        score_cache.cache_path("model", changed, [32, 16], 64, "cpu"),
        score_cache.cache_path("model", reordered, [32, 16], 64, "cpu"),
        score_cache.cache_path("model", data, [32], 64, "cpu"),
        score_cache.cache_path("model", data, [32, 16], 8, "cpu"),
        score_cache.cache_path("model", data, [32, 16], 64, "cuda:0"),
    ]
    assert len({key, *others}) == 1 + len(others)


def test_a_cache_file_that_is_not_what_was_stored_is_a_miss(tmp_path):
    path = tmp_path / "scores.json"
    assert score_cache.load(path, [32]) is None  # none yet
    scores = {"32": {"ndcg@10": 0.5}, "16": {"ndcg@10": 0.25}}
    score_cache.store(path, scores)
    assert score_cache.load(path, [32, 16]) == scores
    assert score_cache.load(path, [32]) is None  # other dimensions
    path.write_text("{not json")
    assert score_cache.load(path, [32, 16]) is None
    path.write_text(json.dumps({"metrics": ["0.5"]}))
    assert score_cache.load(path, [32, 16]) is None


def losses(out):
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
def test_a_second_run_on_the_same_model_and_data_takes_the_base_scores_from_the_cache(tiny_bert, pairs, tmp_path):  # noqa: F811
    cache = tmp_path / "cache"
    first = run_recipe(
        "matryoshka.py", tiny_bert, "bge", tmp_path / "first", pairs, "tracking.wandb=disabled", cache=cache
    )
    assert "from the cache" not in first.stdout
    second = run_recipe(
        "matryoshka.py", tiny_bert, "bge", tmp_path / "second", pairs, "tracking.wandb=disabled", cache=cache
    )
    # The held-out split and each of eval.questions' sets: read, not encoded, and equal to what the first run got.
    hits = [line for line in second.stdout.splitlines() if "from the cache" in line]
    assert [line.split(":")[0] for line in hits] == [
        f"base scores on {s}" for s in ("the held-out split", "staqc", "click")
    ]
    one, two = (json.loads((tmp_path / run / "eval.json").read_text()) for run in ("first", "second"))
    assert two["before"] == one["before"]
    assert {s: q["before"] for s, q in two["questions"].items()} == {
        s: q["before"] for s, q in one["questions"].items()
    }
    assert losses(tmp_path / "second") == losses(tmp_path / "first")  # skipping the evaluation leaves training alone
    # Another evaluation setting misses.
    other = run_recipe(
        "matryoshka.py",
        tiny_bert,
        "bge",
        tmp_path / "other",
        pairs,
        "tracking.wandb=disabled",
        "eval.batch_size=16",
        "train.max_steps=1",
        cache=cache,
    )
    assert "from the cache" not in other.stdout
