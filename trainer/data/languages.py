"""Every function in a source file, with its documentation: Python through ``ast``, the rest through tree-sitter.

:func:`extract_functions` is the one entry point. It returns *every* function and method, with or
without documentation, so that a code-search index and the pair miner read the same units:

    >>> [f.name for f in extract_functions("a.py", 'class A:\\n    def f(self):\\n        return 1\\n', "python")]
    ['A.f']

What counts as a function, per language:

- python: ``def`` / ``async def`` at module level or in a class (at any depth of classes).
- javascript, typescript: function declarations, class methods, and a function or arrow function
  assigned to a ``const``/``let``/``var``.
- go: functions and methods (``Type.Method``). java: methods and constructors with a body.
- rust: ``fn`` items at module level, in ``impl`` blocks (``Type.method``), traits and modules.

Functions defined inside another function are not extracted on their own: their text is already
part of their parent's code, and a second document holding the same lines would be a false
negative for retrieval.

Documentation is the Python docstring, or the doc comment directly above the function (no blank
line between): JSDoc/Javadoc ``/** */``, Go ``//`` lines, Rust ``///`` lines or ``/** */``. The
comment markers are stripped; the text is otherwise left whole (see
:func:`trainer.data.mining.docstring_summary` for the query made from it). Python code has its
docstring cut out; doc comments sit outside the code already. Decorators, annotations and Rust
attributes stay with the code.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath

import tree_sitter
import tree_sitter_go
import tree_sitter_java
import tree_sitter_javascript
import tree_sitter_rust
import tree_sitter_typescript

EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".java": "java",
    ".rs": "rust",
}
"""File suffix -> grammar. ``tsx`` is reported as language ``typescript``."""

LANGUAGES: tuple[str, ...] = ("python", "javascript", "typescript", "go", "java", "rust")


@dataclass(frozen=True)
class Function:
    """One function or method as it stands in a file.

    Attributes:
        name: qualified by its enclosing classes/impl/trait/receiver, e.g. ``Parser.parse``.
        path: the file, relative to the mined root, with ``/`` separators.
        start_line, end_line: 1-based, inclusive; ``start_line`` is the first line of ``code``
            (a decorator or annotation, if any).
        language: one of :data:`LANGUAGES`.
        code: the source, dedented, without the docstring or doc comment.
        docstring: the documentation with comment markers stripped, or None when there is none.
    """

    name: str
    path: str
    start_line: int
    end_line: int
    language: str
    code: str
    docstring: str | None


class ParseError(Exception):
    """A file that is not valid source for its language; the miner counts and skips it."""


def language_for_path(path: str | PurePath) -> str | None:
    """The grammar for a file name (``tsx`` for ``.tsx``), or None when the suffix is not one we mine."""
    return EXTENSIONS.get(PurePath(path).suffix.lower())


def extract_functions(path: str, text: str, language: str) -> list[Function]:
    """Every function in ``text``, in source order.

    Args:
        path: recorded in each :class:`Function`; not read.
        text: the file's content (any newline convention).
        language: a value of :data:`EXTENSIONS` (``python``, ``javascript``, ``typescript``,
            ``tsx``, ``go``, ``java``, ``rust``).

    Raises:
        ParseError: the text does not parse (for tree-sitter: the tree holds an error node,
            because error recovery can glue unrelated text into a function).
        ValueError: an unknown language.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if language == "python":
        return _python_functions(path, text)
    if language not in _GRAMMARS:
        raise ValueError(f"unknown language {language!r}")
    return _tree_sitter_functions(path, text, language)


def full_source(lines: list[str], fn: Function) -> str:
    """``fn``'s lines as they stand in the file, dedented like ``fn.code`` but with the docstring kept.

    Args:
        lines: the file's lines, newlines normalised to ``\\n`` as the miner reads them.
        fn: a function extracted from those lines.
    """
    if fn.language != "python" or fn.docstring is None:
        return fn.code  # only Python functions have their docstring cut out of the code
    rows = lines[fn.start_line - 1 : fn.end_line]
    indent = _indent(rows[0])
    return "\n".join(row[min(indent, _indent(row)) :] for row in rows).rstrip()


def written_sources(text: str, functions: list[Function]) -> list[str]:
    """:func:`full_source` of each of ``functions``, extracted from the file ``text`` (any newline convention)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [full_source(lines, fn) for fn in functions]


def _indent(row: str) -> int:
    return len(row) - len(row.lstrip(" \t"))


# ---------------------------------------------------------------- source spans


Position = tuple[int, int]  # (0-based row, UTF-8 byte column), as both ast and tree-sitter count


def _span(lines: list[bytes], start: Position, end: Position, hole: tuple[Position, Position] | None = None) -> str:
    """The text from ``start`` to ``end``, minus ``hole``, dedented by the start column.

    Columns are byte offsets, so ``lines`` are the UTF-8 encoded lines of the file. A hole whose
    lines hold nothing else (a docstring on its own lines) takes those lines with it.
    """
    (sr, sc), (er, ec) = start, end
    rows = lines[sr : er + 1]
    rows[-1] = rows[-1][:ec]
    if hole is not None:
        (hr, hc), (gr, gc) = hole
        head, tail = rows[hr - sr][:hc], rows[gr - sr][gc:]
        if tail.lstrip().startswith(b";"):  # def f(): "doc"; return 1
            tail = tail.lstrip()[1:].lstrip()
        rows[hr - sr : gr - sr + 1] = [] if not (head.strip() or tail.strip()) else [head + tail]
    out = [rows[0][sc:]]
    for row in rows[1:]:
        indent = len(row) - len(row.lstrip(b" \t"))
        out.append(row[min(sc, indent) :])
    return b"\n".join(out).decode("utf-8").rstrip()


# ---------------------------------------------------------------- python


def _python_functions(path: str, text: str) -> list[Function]:
    try:
        with warnings.catch_warnings():
            # Old escape sequences in string literals warn on every parse; they are not our concern.
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (SyntaxError, ValueError) as err:
        raise ParseError(f"{type(err).__name__}: {err}") from None
    lines = text.encode("utf-8").split(b"\n")
    return [_python_function(path, lines, node, qual) for node, qual in _python_defs(tree, ())]


def _python_defs(node: ast.AST, scope: tuple[str, ...]) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    """Functions and methods with their qualified names; never descends into a function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield child, ".".join((*scope, child.name))
        else:
            yield from _python_defs(child, (*scope, child.name) if isinstance(child, ast.ClassDef) else scope)


def _python_function(
    path: str, lines: list[bytes], node: ast.FunctionDef | ast.AsyncFunctionDef, qual: str
) -> Function:
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    # A def or decorator always starts its line, so the line's indentation is the start column.
    indent = len(lines[first - 1]) - len(lines[first - 1].lstrip(b" \t"))
    hole = None
    docstring = ast.get_docstring(node, clean=True)
    if docstring is not None:
        doc = node.body[0]
        hole = ((doc.lineno - 1, doc.col_offset), (doc.end_lineno - 1, doc.end_col_offset))
    code = _span(lines, (first - 1, indent), (node.end_lineno - 1, node.end_col_offset), hole)
    return Function(qual, path, first, node.end_lineno, "python", code, docstring or None)


# ---------------------------------------------------------------- tree-sitter


@dataclass(frozen=True)
class _Grammar:
    """How one tree-sitter grammar spells functions, scopes and doc comments."""

    load: Callable[[], object]  # the grammar package's language() capsule
    functions: frozenset[str]  # node types that are a function (checked for a body)
    scopes: dict[str, str]  # node type -> field naming it, for qualifying the functions inside
    doc_style: str  # "block": one /** */ comment; "line": consecutive line comments
    doc_prefix: str  # what a doc comment starts with
    not_doc_prefix: str | None = None  # starts like a doc comment but is not one (Rust ////, Go /*)
    between: frozenset[str] = frozenset()  # nodes that may stand between a doc comment and its function
    directives: bool = False  # Go: //go:noinline-style lines may stand between too
    language: str = ""  # reported language, when it differs from the grammar's key


def _js_like(load: Callable[[], object], language: str) -> _Grammar:
    return _Grammar(
        load=load,
        functions=frozenset(
            {"function_declaration", "generator_function_declaration", "method_definition", "variable_declarator"}
        ),
        scopes={"class_declaration": "name", "abstract_class_declaration": "name", "class": "name"},
        doc_style="block",
        doc_prefix="/**",
        between=frozenset({"decorator"}),
        language=language,
    )


def _grammars() -> dict[str, _Grammar]:
    return {
        "javascript": _js_like(tree_sitter_javascript.language, "javascript"),
        "typescript": _js_like(tree_sitter_typescript.language_typescript, "typescript"),
        "tsx": _js_like(tree_sitter_typescript.language_tsx, "typescript"),
        "go": _Grammar(
            load=tree_sitter_go.language,
            functions=frozenset({"function_declaration", "method_declaration"}),
            scopes={},
            doc_style="line",
            doc_prefix="//",
            not_doc_prefix="/*",
            directives=True,
        ),
        "java": _Grammar(
            load=tree_sitter_java.language,
            functions=frozenset({"method_declaration", "constructor_declaration"}),
            scopes={
                k: "name"
                for k in ("class_declaration", "interface_declaration", "enum_declaration", "record_declaration")
            },
            doc_style="block",
            doc_prefix="/**",
        ),
        "rust": _Grammar(
            load=tree_sitter_rust.language,
            functions=frozenset({"function_item"}),
            scopes={"impl_item": "type", "trait_item": "name", "mod_item": "name"},
            doc_style="line",
            doc_prefix="///",
            not_doc_prefix="////",
            between=frozenset({"attribute_item"}),
        ),
    }


_GRAMMARS = _grammars()
_FUNCTION_VALUES = {"arrow_function", "function_expression", "function", "generator_function"}
_NAME_TYPES = {"identifier", "property_identifier", "private_property_identifier", "field_identifier"}


@cache
def _parser(language: str) -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(_GRAMMARS[language].load()))


def _tree_sitter_functions(path: str, text: str, language: str) -> list[Function]:
    grammar = _GRAMMARS[language]
    data = text.encode("utf-8")
    tree = _parser(language).parse(data)
    if tree.root_node.has_error:
        raise ParseError("syntax error")
    lines = data.split(b"\n")
    found = []
    for node, scope in _ts_defs(tree.root_node, grammar, ()):
        function = _ts_function(path, lines, node, scope, grammar, language)
        if function is not None:
            found.append(function)
    return found


def _ts_defs(
    node: tree_sitter.Node, grammar: _Grammar, scope: tuple[str, ...]
) -> Iterator[tuple[tree_sitter.Node, tuple[str, ...]]]:
    """Candidate function nodes with their enclosing scope names; never descends into one taken."""
    for child in node.named_children:
        if child.type in grammar.functions and _is_function(child):
            yield child, scope
            continue
        inner = scope
        if child.type in grammar.scopes:
            named = child.child_by_field_name(grammar.scopes[child.type])
            if named is not None:
                inner = (*scope, _scope_name(named))
        yield from _ts_defs(child, grammar, inner)


def _is_function(node: tree_sitter.Node) -> bool:
    """A function with a body (not a signature), or a declarator whose value is a function."""
    if node.type == "variable_declarator":
        value = node.child_by_field_name("value")
        return value is not None and value.type in _FUNCTION_VALUES
    return node.child_by_field_name("body") is not None


def _scope_name(node: tree_sitter.Node) -> str:
    """``Foo`` for ``Foo``, ``Foo<T>``, ``crate::a::Foo`` or ``*Foo``."""
    text = _text(node)
    return re.split(r"[<\[(]", text, maxsplit=1)[0].rsplit("::", 1)[-1].lstrip("*&").strip()


def _text(node: tree_sitter.Node) -> str:
    return node.text.decode("utf-8")


def _ts_function(
    path: str, lines: list[bytes], node: tree_sitter.Node, scope: tuple[str, ...], grammar: _Grammar, language: str
) -> Function | None:
    name_node = node.child_by_field_name("name")
    if name_node is None or name_node.type not in _NAME_TYPES:
        return None  # anonymous, computed (`[Symbol.iterator]()`) or destructured: no name to search by
    receiver = node.child_by_field_name("receiver")  # Go: func (c *Config) Parse()
    if receiver is not None:
        scope = (*scope, _go_receiver(receiver))
    anchor = _anchor(node)
    first, docstring = _leading(anchor, grammar)
    start = (first.start_point.row, first.start_point.column)
    code = _span(lines, start, (anchor.end_point.row, anchor.end_point.column))
    return Function(
        name=".".join((*scope, _text(name_node))),
        path=path,
        start_line=first.start_point.row + 1,
        end_line=anchor.end_point.row + 1,
        language=grammar.language or language,
        code=code,
        docstring=docstring,
    )


def _go_receiver(receiver: tree_sitter.Node) -> str:
    param = next((c for c in receiver.named_children if c.type == "parameter_declaration"), None)
    type_node = param.child_by_field_name("type") if param is not None else None
    return _scope_name(type_node) if type_node is not None else ""


def _anchor(node: tree_sitter.Node) -> tree_sitter.Node:
    """The statement a function stands in: ``const f = () => ...;`` or ``export function f``."""
    anchor = node
    if node.type == "variable_declarator":
        parent = node.parent
        if (
            parent is not None
            and parent.type in ("lexical_declaration", "variable_declaration")
            and parent.named_child_count == 1
        ):
            anchor = parent
    if anchor.parent is not None and anchor.parent.type == "export_statement":
        anchor = anchor.parent
    return anchor


def _last_row(node: tree_sitter.Node) -> int:
    """The last row a node covers; a Rust line comment ends at column 0 of the next row."""
    end = node.end_point
    return end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row


def _leading(anchor: tree_sitter.Node, grammar: _Grammar) -> tuple[tree_sitter.Node, str | None]:
    """The first node of the function's code (a decorator/attribute, or the anchor) and its doc comment.

    Walks back over siblings directly above the anchor (no blank line between): decorators and
    attributes join the code; doc comments are collected until something else or a gap.
    """
    first, row = anchor, anchor.start_point.row
    comments: list[str] = []
    node = anchor.prev_sibling
    while node is not None and _last_row(node) >= row - 1:
        text = _text(node)
        if node.type in grammar.between or (grammar.directives and _is_directive(text)):
            if not comments:
                first = node
        elif "comment" in node.type and _is_doc(text, grammar):
            comments.insert(0, text)
            if grammar.doc_style == "block":
                break
        else:
            break
        row = node.start_point.row
        node = node.prev_sibling
    if not comments:
        return first, None
    doc = _strip_block(comments[0]) if comments[0].startswith("/*") else _strip_lines(comments, grammar.doc_prefix)
    return first, doc or None


def _is_doc(text: str, grammar: _Grammar) -> bool:
    if grammar.not_doc_prefix and text.startswith(grammar.not_doc_prefix):
        return False
    if text.startswith(grammar.doc_prefix):
        return True
    return grammar.doc_style == "line" and text.startswith("/**")


def _is_directive(text: str) -> bool:
    """Go toolchain directives (``//go:noinline``, ``//nolint:errcheck``) sit among doc comments but are not prose."""
    return re.match(r"//[a-z]+:", text) is not None


def _strip_block(comment: str) -> str:
    """The text of ``/** ... */`` without the markers and the leading ``*`` of each line."""
    body = comment.removeprefix("/**").removesuffix("*/")
    return "\n".join(re.sub(r"^\s*\*? ?", "", line) for line in body.split("\n")).strip()


def _strip_lines(comments: list[str], prefix: str) -> str:
    """The text of consecutive ``//`` or ``///`` comments, one space after the marker removed."""
    return "\n".join(re.sub(r"^ ?", "", c.rstrip("\n").removeprefix(prefix), count=1) for c in comments).strip()
