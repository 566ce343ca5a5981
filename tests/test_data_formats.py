"""Users' datasets: every format round-trips to the same rows; bad input names the file and line."""

import csv
import json

import datasets
import pytest

from trainer.data.beir import BeirData, write_beir
from trainer.data.formats import load_pairs, rows_dataset, write_jsonl
from trainer.data.splits import SplitConfig, beir_from_rows, split_rows
from trainer.errors import CodetuneError

ROWS = [
    {"query": "parse the config", "positive": "def parse(p):\n    return p", "negatives": ["def other():\n    pass"]},
    {"query": "sum two numbers", "positive": "fn add(a: i32, b: i32) -> i32 { a + b }", "negatives": []},
]


def as_pairs(dataset):
    return [(r["query"], r["positive"], r.get("negatives", [])) for r in dataset]


def test_jsonl_and_json_round_trip(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    for name in ("d.jsonl", "d.json"):
        loaded = load_pairs(tmp_path / name)
        assert as_pairs(loaded) == as_pairs(ROWS)
        assert loaded.column_names == ["query", "positive", "negatives", "path", "line", "name", "language", "docstring"]


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_round_trip_with_renamed_columns(tmp_path, suffix, delimiter):
    path = tmp_path / f"d{suffix}"
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["question", "code", "hard", "path"])
        for r in ROWS:
            writer.writerow([r["query"], r["positive"], json.dumps(r["negatives"]), "src/a.py"])
    loaded = load_pairs(path, query_column="question", positive_column="code", negatives_column="hard")
    assert as_pairs(loaded) == as_pairs(ROWS)
    assert loaded["path"] == ["src/a.py", "src/a.py"]


def test_parquet_and_saved_datasets_round_trip(tmp_path):
    dataset = datasets.Dataset.from_list(ROWS)
    dataset.to_parquet(str(tmp_path / "d.parquet"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "saved_dict"))
    for source in ("d.parquet", "saved", "saved_dict"):
        assert as_pairs(load_pairs(tmp_path / source)) == as_pairs(ROWS)


def test_beir_folder_gives_one_row_per_judgement(tmp_path):
    data = BeirData(
        corpus={
            "d1": {"title": "", "text": "def a(): pass", "path": "a.py"},
            "d2": {"title": "", "text": "def b(): pass"},
        },
        queries={"q1": "first question", "q2": "second question"},
        qrels={"q1": {"d1": 1, "d2": 1}, "q2": {"d2": 1}},
    )
    write_beir(tmp_path / "beir", data)
    loaded = load_pairs(tmp_path / "beir")
    assert [(r["query"], r["positive"], r["path"]) for r in loaded] == [
        ("first question", "def a(): pass", "a.py"),
        ("first question", "def b(): pass", ""),
        ("second question", "def b(): pass", ""),
    ]


XML = """<examples>
<example>
<user_input>how do we parse the config?</user_input>
<snippets>
```python
# src/config.py
def parse(text):
    return text if a < b else None
```
```ts
// web/api.ts
export const f = () => 1;
```
</snippets>
</example>
<example><user_input>where is &lt;main&gt; defined?</user_input><snippets>
```go
cmd/main.go
func main() {}
```
```
x = 1
```
<![CDATA[
```rust
// src/lib.rs
fn keep() -> &'static str { "&amp;" }
```
]]>
</snippets></example>
</examples>
"""


def test_xml_examples_one_row_per_snippet(tmp_path):
    (tmp_path / "d.xml").write_text(XML)
    rows = list(load_pairs(tmp_path / "d.xml"))
    assert [(r["query"], r["path"], r["language"]) for r in rows] == [
        ("how do we parse the config?", "src/config.py", "python"),
        ("how do we parse the config?", "web/api.ts", "typescript"),
        ("where is <main> defined?", "cmd/main.go", "go"),
        ("where is <main> defined?", "", ""),
        ("where is <main> defined?", "src/lib.rs", "rust"),
    ]
    assert rows[0]["positive"] == "def parse(text):\n    return text if a < b else None"
    assert rows[3]["positive"] == "x = 1"
    assert rows[4]["positive"] == 'fn keep() -> &\'static str { "&amp;" }'  # CDATA is taken as it is


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("d.jsonl", '{"query": "q", "positive": "p"}\n{"query": "q"\n', {}, r"d\.jsonl:2: malformed JSON"),
        (
            "d.jsonl",
            '{"query": "q", "positive": "p"}\n\n{"query": "q"}\n',
            {},
            r"d\.jsonl:3: missing column 'positive'",
        ),
        ("d.jsonl", '{"query": "", "positive": "p"}\n', {}, r"d\.jsonl:1: column 'query' is empty"),
        ("d.jsonl", '["q", "p"]\n', {}, r"d\.jsonl:1: expected a JSON object"),
        (
            "d.jsonl",
            '{"query": "q", "positive": "p"}\n',
            {"negatives_column": "neg"},
            r"d\.jsonl:1: missing column 'neg'",
        ),
        ("d.jsonl", "", {}, r"d\.jsonl: empty file"),
        ("d.csv", "question,code\nq,p\n", {}, r"d\.csv:1: missing column 'query' \(columns: question, code\)"),
        ("d.csv", "query,positive\nq,p\n,p2\n", {}, r"d\.csv:3: column 'query' is empty"),
        ("d.txt", "hello", {}, r"d\.txt: unknown data format '\.txt'"),
        ("d.xml", "<examples></examples>", {}, r"d\.xml: no <example> elements"),
        (
            "d.xml",
            "<examples>\n\n<example><snippets>```\nx\n```</snippets></example>",
            {},
            r"d\.xml:3: <example> has no <user_input>",
        ),
        (
            "d.xml",
            "<example><user_input>q</user_input><snippets>none</snippets></example>",
            {},
            r"d\.xml:1: <snippets> holds no fenced",
        ),
        ("d.parquet", "not parquet", {}, r"d\.parquet: not a readable Parquet file"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, content, kwargs, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(CodetuneError, match=message):
        load_pairs(tmp_path / name, **kwargs)


def test_missing_and_unknown_folders(tmp_path):
    with pytest.raises(CodetuneError, match="file not found"):
        load_pairs(tmp_path / "nothing.jsonl")
    with pytest.raises(CodetuneError, match="not a BEIR folder"):
        load_pairs(tmp_path)


def test_user_rows_split_by_path_and_become_beir(tmp_path):
    rows = rows_dataset([{"query": f"q{i}", "positive": f"code {i}", "path": f"f{i % 4}.py"} for i in range(12)])
    train, test = split_rows(rows, SplitConfig(test_fraction=0.5, seed=1))
    assert len(train) + len(test) == 12 and len(test) > 0
    assert not set(train["path"]) & set(test["path"])
    beir = beir_from_rows(test)
    assert len(beir.queries) == len(test) and len(beir.corpus) == len(test)
    write_beir(tmp_path / "b", beir)
    assert len(load_pairs(tmp_path / "b")) == len(test)
