"""Training documents as written: the docstring put back, less the summary a query was made of."""

import ast

from trainer.data.documents import add_written_documents, docstring_rest, with_docstring, written_document
from trainer.data.formats import rows_dataset
from trainer.data.languages import extract_functions

SOURCE = '''
class Box:
    @staticmethod
    def pack(items, size=3):
        """Pack items into boxes of a given size.

        Args:
            items: what to pack.
            size: items per box.
        """
        # fill box by box
        return [items[i : i + size] for i in range(0, len(items), size)]
'''


def _function():
    (fn,) = extract_functions("box.py", SOURCE, "python")
    return fn


def test_with_docstring_restores_the_function_as_written():
    fn = _function()
    restored = with_docstring(fn.code, fn.docstring)
    tree = ast.parse(restored)
    assert ast.get_docstring(tree.body[0]) == fn.docstring  # the same docstring, where Python reads it
    assert "# fill box by box" in restored and restored.startswith("@staticmethod")


def test_a_docstring_query_does_not_find_its_summary_in_the_document():
    fn = _function()
    assert docstring_rest(fn.docstring).startswith("Args:")
    doc = written_document(fn.code, fn.docstring, "docstring")
    assert "Pack items into boxes" not in doc and "items per box." in doc
    assert "Pack items into boxes" in written_document(fn.code, fn.docstring, "name")  # the name asks: all of it
    assert written_document(fn.code, "Pack items.", "short") == fn.code  # nothing beyond the summary: bare code


def test_written_share_changes_that_share_of_rows_and_no_other():
    fn = _function()
    row = {"query": "Pack items into boxes of a given size.", "positive": fn.code, "path": "box.py", "line": 1,
           "name": fn.name, "language": "python", "docstring": fn.docstring}
    rows = rows_dataset([row] * 200 + [{**row, "docstring": ""}] * 20)
    out = add_written_documents(rows, 0.5, seed=0)
    changed = [a != b for a, b in zip(rows["positive"], out["positive"])]
    assert 70 < sum(changed[:200]) < 130 and not any(changed[200:])  # undocumented rows stay bare
    assert out["positive"] == add_written_documents(rows, 0.5, seed=0)["positive"]  # every process, the same rows
    assert out.column_names == rows.column_names
