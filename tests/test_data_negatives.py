"""Hard negatives checked against a ranking computed here by hand (tiny random BERT), and the CLI (all-MiniLM-L6-v2)."""

import itertools
import json
from pathlib import Path

import pytest
import torch.nn.functional as F

from trainer.data.__main__ import main as data_main
from trainer.data.filters import code_key
from trainer.data.formats import rows_dataset
from trainer.data.mining import mine
from trainer.data.negatives import NegativesConfig, mine_hard_negatives
from trainer.errors import CodetuneError
from trainer.models import load_model

TREE = Path(__file__).parent / "fixtures" / "code_tree"


@pytest.fixture(scope="module")
def model(tiny_bert):
    return load_model(str(tiny_bert), preset="bge")


@pytest.fixture(scope="module")
def rows():
    rows = [p.to_row() for p in mine([TREE]).pairs]
    by_name = {r["name"]: r for r in rows}
    port, config = by_name["parse_port"], by_name["load_config"]
    # The same code with other whitespace, under another query: a false negative for parse_port.
    rows.append(
        {
            **port,
            "query": "read a port from a string",
            "positive": port["positive"].replace("    ", "\t"),
            "path": "copy.py",
            "name": "p",
        }
    )
    # Another version of load_config (same path and name, other code): a false negative too.
    rows.append({**config, "query": "merge JSON settings", "positive": config["positive"] + "\n# changed"})
    return rows_dataset(rows)


def ranking(model, rows):
    """Pool texts, their unit embeddings, and each row's (Q, N) cosine scores, computed here independently."""
    pool = list(dict.fromkeys(rows["positive"]))
    docs = F.normalize(model.encode_document(pool, convert_to_tensor=True), dim=-1)
    queries = F.normalize(model.encode_query(rows["query"], convert_to_tensor=True), dim=-1)
    return pool, docs, (queries @ docs.T).tolist()


def ranks(scores, c, tol=1e-4):
    """The ranks document ``c`` can hold: ties (the whitespace copies embed alike) make it a range."""
    best = sum(s > scores[c] + tol for s in scores)
    return range(best, sum(s >= scores[c] - tol for s in scores))


def false_negatives(rows, pool, row):
    """Pool texts that must never be a negative of ``row``."""
    same_query = {r["positive"] for r in rows if r["query"] == row["query"]}
    keys = {code_key(t) for t in same_query}
    same_function = {r["positive"] for r in rows if (r["path"], r["name"]) == (row["path"], row["name"])}
    return {t for t in pool if t in same_query or code_key(t) in keys or t in same_function}


def test_whole_ranking_minus_false_negatives(model, rows):
    out = mine_hard_negatives(model, rows, NegativesConfig(window=(0, 100), per_query=100, max_similarity=1.0))
    pool, _, scores = ranking(model, rows)
    index = {t: i for i, t in enumerate(pool)}
    for row, row_scores in zip(out, scores):
        assert set(row["negatives"]) == set(pool) - false_negatives(rows, pool, row)
        got = [row_scores[index[n]] for n in row["negatives"]]
        assert all(a >= b - 1e-4 for a, b in itertools.pairwise(got))  # in rank order
    port = next(r for r in out if r["name"] == "parse_port")
    assert rows[-2]["positive"] not in port["negatives"]  # the whitespace copy
    config = next(r for r in out if r["name"] == "load_config" and r["query"] != "merge JSON settings")
    assert rows[-1]["positive"] not in config["negatives"]  # the other version


def test_negatives_come_from_the_rank_window(model, rows):
    out = mine_hard_negatives(model, rows, NegativesConfig(window=(2, 6), per_query=2, max_similarity=1.0))
    pool, _, scores = ranking(model, rows)
    index = {t: i for i, t in enumerate(pool)}
    for row, row_scores in zip(out, scores):
        assert 1 <= len(row["negatives"]) <= 2
        assert not set(row["negatives"]) & false_negatives(rows, pool, row)
        for negative in row["negatives"]:
            assert set(ranks(row_scores, index[negative])) & set(range(2, 6))


def test_too_similar_hits_are_dropped(model, rows):
    pool, docs, _ = ranking(model, rows)
    threshold = (docs @ docs.T).median().item()
    out = mine_hard_negatives(model, rows, NegativesConfig(window=(0, 100), per_query=100, max_similarity=threshold))
    index = {t: i for i, t in enumerate(pool)}
    dropped = 0
    for row in out:
        sims = [float(docs[index[n]] @ docs[index[row["positive"]]]) for n in row["negatives"]]
        assert all(s <= threshold + 1e-5 for s in sims)
        dropped += len(pool) - 1 - len(row["negatives"])
    assert dropped > len(out)  # the threshold did remove something beyond the positives


def test_config_checks():
    with pytest.raises(CodetuneError, match="window"):
        NegativesConfig(window=(5, 5))
    with pytest.raises(CodetuneError, match="per_query"):
        NegativesConfig(per_query=0)


def test_cli_writes_beside_and_keeps_the_original(tmp_path, capsys):
    out = tmp_path / "mined"
    data_main(["mine", str(TREE), "--out", str(out), "--test-fraction", "0.5", "--seed", "3"])
    original = (out / "train.jsonl").read_text()
    assert (
        data_main(["negatives", "--model", "default", "--data", str(out), "--window", "1", "5", "--per-query", "2"])
        == 0
    )
    assert (out / "train.jsonl").read_text() == original
    rows = [json.loads(line) for line in (out / "train.negatives.jsonl").read_text().splitlines()]
    assert len(rows) == len(original.splitlines())
    assert all(1 <= len(r["negatives"]) <= 2 and r["positive"] not in r["negatives"] for r in rows)
    assert "train.negatives.jsonl" in capsys.readouterr().out
