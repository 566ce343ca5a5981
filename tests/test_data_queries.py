"""Query forms for training rows, the general-questions set, and no leak from any evaluation set into training."""

import datasets
import pytest

from trainer.data.queries import add_query_forms, identifier_words, name_query, short_query
from trainer.errors import CodetuneError


def test_identifier_words_split_snake_and_camel_case():
    assert identifier_words("parse_http_date") == ["parse", "http", "date"]
    assert identifier_words("parseHTTPDate") == ["parse", "http", "date"]
    assert identifier_words("__init__") == ["init"]


def test_name_query_says_something_or_nothing():
    assert name_query("Calendar.monthrange") == "calendar monthrange"  # one word: the class joins it
    assert name_query("HTTPServer.serve_forever") == "serve forever"
    assert name_query("Foo.__init__") is None
    assert name_query("run") is None


def test_short_query_is_a_search_box_question():
    assert short_query("Return the number of days in the given month.") == "number of days in the given month"
    assert short_query("Parse a config file (INI format) and return a dict.") == "parse a config file"
    assert short_query("Compute the hash.") is None  # nothing shorter to say
    assert short_query("Send the whole request body to the server in chunks of the given size.") is None  # > 8 words


def test_add_query_forms_adds_rows_with_the_same_code():
    rows = datasets.Dataset.from_list([
        {"query": "Return the number of days in the given month.", "positive": "def monthrange(y, m): ...", "name": "monthrange_days"},
        {"query": "Initialise it.", "positive": "def __init__(self): ...", "name": "Foo.__init__"},
    ])
    out = add_query_forms(rows, ["docstring", "name", "short"])
    assert out["query_form"] == ["docstring", "docstring", "name", "short"]
    assert out["query"][2:] == ["monthrange days", "number of days in the given month"]
    assert out["positive"][2:] == [rows[0]["positive"]] * 2
    assert add_query_forms(rows, ["docstring"])["query"] == rows["query"]
    with pytest.raises(CodetuneError, match="data.query_forms: unknown form 'title'"):
        add_query_forms(rows, ["docstring", "title"])
    with pytest.raises(CodetuneError, match="must include 'docstring'"):
        add_query_forms(rows, ["name"])


def test_general_questions_are_task_descriptions_over_solutions():
    from trainer.data.general import humaneval_beir, task_description

    data = humaneval_beir()
    assert len(data.queries) == len(data.corpus) == 164
    q = data.queries["q-HumanEval-0"]
    assert q.startswith("Check if in given list of numbers") and ">>>" not in q
    doc = data.corpus["HumanEval-0"]["text"]
    assert doc.startswith("def has_close_elements(") and "Check if" not in doc  # the docstring is cut out
    short = humaneval_beir(short=True).queries["q-HumanEval-1"]
    assert short == "Input to this function is a string containing multiple groups of nested parentheses."
    assert task_description("Sort it.\n    >>> f([2, 1])\n    [1, 2]") == "Sort it."


@pytest.mark.slow
def test_no_evaluation_file_group_or_question_is_in_training(tmp_path, monkeypatch):
    """The default data: held-out files, their queries and the general set never reach a training row."""
    from trainer.data import DataConfig, load_training_data
    from trainer.data.beir import load_beir
    from trainer.data.general import humaneval_beir

    cfg = DataConfig(query_forms=["docstring", "name", "short"])
    data = load_training_data(cfg, tmp_path)
    train = data.train
    held_out = load_beir(data.eval_dir)
    test_paths = {doc["path"] for doc in held_out.corpus.values()}
    assert test_paths and not test_paths & set(train["path"])
    # No held-out function is a training positive. (A few generic docstrings, "Close the file.",
    # are shared by functions of other files: the same words, never the same answer.)
    assert not {d["text"] for d in held_out.corpus.values()} & set(train["positive"])
    test_pairs = {(held_out.queries[q], held_out.corpus[d]["text"]) for q, docs in held_out.qrels.items() for d in docs}
    assert not test_pairs & set(zip(train["query"], train["positive"]))
    general = humaneval_beir()
    assert not set(general.queries.values()) & set(train["query"])
    assert not {d["text"] for d in general.corpus.values()} & set(train["positive"])


def test_web_query_names_the_language_as_a_web_search_does():
    from trainer.data.queries import WEB_TEMPLATES, web_query

    asked = [web_query(s, "python") for s in ("Parse an HTTP date string.", "Return the number of days in the given month.",
                                               "Check whether the file is read-only.", "Split a path into its parts.")]
    assert all("python" in q for q in asked)
    assert "parse an http date string" in asked[0]  # the summary's words even where the short form would be the summary
    assert len({q.split()[0] == "python" for q in asked} | {q.startswith("how to") for q in asked}) > 1  # several orders
    assert web_query("Helper.", "python") is None and web_query("Parse an HTTP date.", "") is None
    assert len(WEB_TEMPLATES) == 3 and web_query("Parse an HTTP date string.", "python") == asked[0]  # stable
