"""loss.teacher: a stronger model's embeddings of every training text, encoded once and looked up per batch."""

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from trainer.errors import CodetuneError
from trainer.models import load_model
from trainer.teacher import load_teacher, training_texts

ROWS = [
    {"query": "parse a config file", "positive": "def parse(path): return load(path)", "negatives": ["def sort(xs): xs.sort()"]},
    {"query": "open a socket", "positive": "def connect(): return socket()", "negatives": ["def parse(path): return load(path)"]},
    {"query": "parse a config file", "positive": "def read(p): return open(p).read()", "negatives": []},
]


def test_training_texts_are_each_distinct_query_and_document_once():
    queries, documents = training_texts(ROWS)
    assert queries == ["parse a config file", "open a socket"]
    assert sorted(documents) == sorted({r["positive"] for r in ROWS} | {n for r in ROWS for n in r["negatives"]})
    assert len(documents) == 4  # a positive that is another row's negative is encoded once


def test_the_teacher_embeds_a_batch_as_the_model_does_and_encodes_once(tiny_roberta, tmp_path, monkeypatch):
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    acc = Accelerator(cpu=True)
    teacher = load_teacher(str(tiny_roberta), ROWS, acc, max_seq_length=64)
    model = load_model(str(tiny_roberta), max_seq_length=64)
    queries, docs = ["open a socket", "parse a config file"], ["def sort(xs): xs.sort()", "def connect(): return socket()"]
    tq, td = teacher.embed(queries, docs, "cpu")  # (2, T), (2, T)
    with torch.no_grad():
        eq = F.normalize(model.encode_query(queries, convert_to_tensor=True), dim=-1)
        ed = F.normalize(model.encode_document(docs, convert_to_tensor=True), dim=-1)
    torch.testing.assert_close(tq, eq, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(td, ed, atol=1e-5, rtol=1e-4)
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.pt"))) == 2  # queries and documents
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "embeddings").glob("*.pt")}
    again = load_teacher(str(tiny_roberta), ROWS, acc, max_seq_length=64)  # a second run reads the cache
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    torch.testing.assert_close(again.embed(queries, docs, "cpu")[1], td)


def test_a_text_the_teacher_never_saw_and_a_bad_name_fail_naming_the_key(tiny_roberta, tmp_path, monkeypatch):
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    acc = Accelerator(cpu=True)
    teacher = load_teacher(str(tiny_roberta), ROWS, acc, max_seq_length=64)
    with pytest.raises(CodetuneError, match="loss.teacher: a training text has no teacher embedding"):
        teacher.embed(["a query nobody asked"], [], "cpu")
    with pytest.raises(CodetuneError, match=r"^loss.teacher: model .*no-such-model.*folder not found"):
        load_teacher(str(tmp_path / "no-such-model"), ROWS, acc, max_seq_length=64)
