"""The shared evaluator against sentence-transformers' InformationRetrievalEvaluator, and its CLI."""

import json
import subprocess
import sys

import pytest
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

from trainer.data.beir import BeirData, load_beir
from trainer.evaluator import default_dims, encode_corpus, evaluate
from trainer.models import load_model

REFERENCE_KEYS = {
    "ndcg@10": "ndcg@10", "mrr@10": "mrr@10", "recall@1": "recall@1", "recall@5": "recall@5",
    "recall@10": "recall@10", "recall@100": "recall@100", "map@100": "map@100",
}


def reference_metrics(model, data, dim):
    """sentence-transformers' evaluator, one instance (and one encoding pass) per dimension."""
    ev = InformationRetrievalEvaluator(
        queries=data.queries,
        corpus={i: data.document_text(i) for i in data.corpus},
        relevant_docs=data.relevant(),
        precision_recall_at_k=[1, 5, 10, 100],
        accuracy_at_k=[1],
        truncate_dim=dim,
        write_csv=False,
    )
    out = ev(model)
    return {ours: next(v for k, v in out.items() if k.endswith(f"cosine_{theirs}")) for ours, theirs in REFERENCE_KEYS.items()}


def test_matches_sentence_transformers_at_every_dim(beir_code):
    # A trained model: a random tiny one has near-tied scores that padding noise reorders.
    model = load_model("default")
    data = load_beir(beir_code)
    dims = default_dims(model.get_embedding_dimension())
    ours = evaluate(model, data, dims, show_progress=False)
    assert list(ours) == [str(d) for d in dims]
    for dim in dims:
        ref = reference_metrics(model, data, dim)
        for name, value in ref.items():
            assert ours[str(dim)][name] == pytest.approx(value, abs=1e-4), (dim, name)


def test_a_query_head_scored_on_its_base_models_corpus_scores_as_if_it_encoded_it(tiny_bert, beir_code):
    """The head recipe encodes the corpus once for before and after: the head's documents are the base's."""
    import torch

    from trainer.models.projection import QueryHead, with_query_head

    base = load_model(str(tiny_bert), preset="bge")
    head = QueryHead(32, 0)
    with torch.no_grad():
        head.weight.add_(0.3 * torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))
    model = with_query_head(base, head)
    data = load_beir(beir_code)
    corpus = encode_corpus(base, data, show_progress=False)
    own = encode_corpus(model, data, show_progress=False)
    # The document route normalises once more: a no-op up to fp32 rounding, which can move an fp16
    # embedding by one unit in its last place (2**-11 below 1). Which way it rounds depends on the
    # kernels torch picks (threads, vector width), so a near-tie of this random tiny model may flip:
    # the metrics agree to a query, not bitwise.
    assert torch.equal(own.positions, corpus.positions)
    assert (own.embeddings.float() - corpus.embeddings.float()).abs().max() <= 2**-11
    fresh = evaluate(model, data, [32, 16], show_progress=False)
    shared = evaluate(model, data, [32, 16], show_progress=False, corpus=corpus)
    one_query = 1 / len(data.relevant())
    for dim, metrics in fresh.items():
        assert shared[dim] == pytest.approx(metrics, abs=one_query)
    assert fresh != evaluate(base, data, [32, 16], show_progress=False, corpus=corpus)  # the head moved the queries
    smaller = BeirData(dict(list(data.corpus.items())[:-1]), data.queries, data.qrels)
    with pytest.raises(ValueError, match="corpus: a share of"):
        evaluate(model, smaller, [32], show_progress=False, corpus=corpus)


def test_default_dims():
    assert default_dims(768) == [768, 512, 256, 128, 64]
    assert default_dims(384) == [384, 256, 128, 64]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "trainer.evaluate", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_writes_json(beir_code, tmp_path):
    out = tmp_path / "results.json"
    proc = run_cli("--model", "default", "--data", str(beir_code), "--dims", "384", "128", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["model"] == "default" and result["split"] == "test"
    assert set(result["metrics"]) == {"384", "128"}
    assert set(result["metrics"]["384"]) == set(REFERENCE_KEYS)
    assert result["metrics"]["384"]["ndcg@10"] > 0.5  # docstring queries against their own functions
    assert "ndcg@10" in proc.stdout


def _broken_copy(beir_code, tmp_path, fix):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(beir_code, data)
    fix(data)
    return data


@pytest.mark.parametrize(
    "fix,expected",
    [
        (lambda d: (d / "corpus.jsonl").unlink(), "corpus.jsonl: file not found"),
        (lambda d: (d / "queries.jsonl").write_text('{"_id": "q0", "text": "x"}\n{oops\n'), "queries.jsonl:2: malformed JSON"),
        (lambda d: (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tnope\t1\n"), "test.tsv:2: unknown corpus id 'nope'"),
    ],
)
def test_cli_bad_input_is_one_line(beir_code, tmp_path, fix, expected):
    out = tmp_path / "results.json"
    data = _broken_copy(beir_code, tmp_path, fix)
    proc = run_cli("--data", str(data), "--output", str(out))
    assert proc.returncode == 2
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_bad_flags(beir_code, tmp_path):
    proc = run_cli("--data", str(beir_code), "--dims", "999")
    assert proc.returncode == 2 and "--dims: dimension 999" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("--data", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "BEIR folder not found" in proc.stderr
    proc = run_cli("--data", str(beir_code), "--model", "./no/such/model")
    assert proc.returncode == 2 and "no/such/model" in proc.stderr and "Traceback" not in proc.stderr
