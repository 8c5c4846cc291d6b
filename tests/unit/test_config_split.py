"""Cutting a YAML file into its documents without parsing it.

The incremental loader parses the pieces of a file one by one; that is only
right if every piece, parsed alone at its first line, gives exactly the
documents (values and positions) that parsing the whole file gives. These
tests hold :func:`split_documents` and :func:`shift_document` to that.
"""

from __future__ import annotations

import pytest

from sailplane.config.yamldoc import (
    AliasBudget,
    Document,
    parse_documents,
    shift_document,
    split_documents,
)
from sailplane.errors import YamlSyntaxError
from sailplane.model.source import Position

# Files that are safe to cut, each with something a naive splitter gets wrong.
SAFE = {
    "leading-implicit-document": "kind: A\nmetadata: {name: a}\n---\nkind: B\n",
    "leading-comments-and-blank-lines": "# header\n\n---\nkind: A\n---\n\nkind: B\n",
    "marker-with-comment-and-content": "--- # first\nkind: A\n--- {kind: B}\n---\n",
    "empty-documents": "---\n---\n# only a comment\n---\nkind: A\n---\n",
    "no-trailing-newline": "---\nkind: A\n---\nkind: B",
    "block-scalar-with-dashes": (
        "kind: A\ndata:\n  text: |\n    ---\n    not a marker\n  other: x\n---\nkind: B\n"
    ),
    "not-markers": "kind: A\nname: ----\nlist:\n- ---x\n---x: 1\n---\nkind: B\n",
    "marker-followed-by-tab": "kind: A\n---\t# tab\nkind: B\n",
    "crlf": "kind: A\r\nspec:\r\n  x: 1\r\n---\r\nkind: B\r\n  # c\r\n",
    "multi-line-plain-scalar": "kind: A\ntext: one\n  two\n---\nkind: B\n",
    "empty": "",
    "only-a-marker": "---\n",
    "aliases-within-a-document": "---\na: &x {k: v}\nb: *x\n---\nc: &x 1\nd: *x\n",
}


def _documents(pieces: list[tuple[int, str]], file: str) -> list[Document]:
    return [doc for line, text in pieces for doc in parse_documents(text, file, line)]


def _located(documents: list[Document]) -> list[object]:
    """Values and every position: what must not differ between the two parses."""
    return [(d.data, d.source, dict(d.source.positions)) for d in documents]


@pytest.mark.parametrize("text", SAFE.values(), ids=SAFE.keys())
def test_pieces_parse_to_the_documents_of_the_whole_file(text: str) -> None:
    pieces = split_documents(text)
    assert pieces is not None
    assert "".join(piece for _, piece in pieces) == text
    whole = parse_documents(text, "f.yaml")
    assert _located(_documents(pieces, "f.yaml")) == _located(whole)


def test_each_piece_starts_at_its_own_line() -> None:
    text = "kind: A\n---\nkind: B\nspec: {}\n--- # c\n\nkind: C\n"
    assert split_documents(text) == [
        (0, "kind: A\n"),
        (1, "---\nkind: B\nspec: {}\n"),
        (4, "--- # c\n\nkind: C\n"),
    ]


UNSAFE = {
    "yaml-directive": "%YAML 1.1\n---\nkind: A\n",
    "tag-directive-later": "kind: A\n...\n%TAG !e! tag:example.com,2000:\n---\nkind: B\n",
    "document-end-marker": "kind: A\n...\nkind: B\n",
    "lone-carriage-return": "kind: A\r---\rkind: B\r",
    "next-line": "kind: A\x85---\x85kind: B\n",
    "line-separator": "kind: A\u2028---\nkind: B\n",
    "byte-order-mark": "\ufeffkind: A\n---\nkind: B\n",
}


@pytest.mark.parametrize("text", UNSAFE.values(), ids=UNSAFE.keys())
def test_texts_that_cannot_be_cut_safely_are_not_cut(text: str) -> None:
    assert split_documents(text) is None


def test_a_shifted_document_has_the_positions_a_parse_at_its_new_line_gives() -> None:
    piece = "---\nkind: A\nspec:\n  hosts:\n  - a\n  - b\n"
    (here,) = parse_documents(piece, "f.yaml", 3)
    (there,) = parse_documents(piece, "f.yaml", 10)
    moved = shift_document(here, 7)
    assert _located([moved]) == _located([there])
    assert moved.data is here.data  # shared, not copied


def test_documents_are_built_one_at_a_time_without_spending_the_alias_budget() -> None:
    """Each document's nodes are freed before the next is composed, so node
    ids come back; anchors never cross documents, so none is an alias."""
    text = "\n---\n".join(
        f"kind: K\nmetadata: {{name: n{i}, labels: {{a: b}}}}" for i in range(3000)
    )
    documents = parse_documents(text, "many.yaml", aliases=AliasBudget(0))
    assert [d.data["metadata"]["name"] for d in documents] == [f"n{i}" for i in range(3000)]
    assert documents[-1].source.position.line == 3 * 2999 + 1


def test_a_syntax_error_after_good_documents_still_rejects_the_file() -> None:
    text = "kind: A\n---\nkind: B\n---\nkind: [C\n"
    with pytest.raises(YamlSyntaxError) as raised:
        parse_documents(text, "broken.yaml")
    assert raised.value.diagnostic.format().startswith("broken.yaml:6:1: YAML syntax error")


def test_positions_are_found_again_for_the_right_document() -> None:
    """A load keeps no positions; a document's are found by parsing its text
    again when asked, counting only the documents that were kept (empty and
    null ones are skipped both times)."""
    text = "---\n---\n~\n---\nkind: A\nspec:\n  hosts:\n  - a\n---\n# c\nkind: B\nspec: {x: 1}\n"
    a, b = parse_documents(text, "f.yaml", 10)
    assert (a.data["kind"], b.data["kind"]) == ("A", "B")
    assert dict(a.source.positions) == {
        (): (p := Position)(15, 1),
        ("kind",): p(15, 7),
        ("spec",): p(17, 3),
        ("spec", "hosts"): p(18, 3),
        ("spec", "hosts", 0): p(18, 5),
    }
    assert b.source.locate(("spec", "x")) == Position(22, 11)
    assert b.source.locate(("spec", "missing")) == Position(22, 7)


def test_positions_found_again_do_not_spend_the_loads_alias_budget() -> None:
    text = "a: &x {k: v}\nb: *x\nc: *x\n"
    budget = AliasBudget(4)
    (doc,) = parse_documents(text, "f.yaml", aliases=budget)
    assert budget.remaining == 0
    # An alias is its anchor's node: the anchor's position, found again
    # with a budget of its own.
    assert doc.source.locate(("c", "k")) == doc.source.locate(("a", "k")) == Position(1, 11)
    assert doc.source.locate(("c",)) == doc.source.locate(("a",)) == Position(1, 4)
    assert budget.remaining == 0


def test_a_text_is_parsed_again_once_however_many_documents_ask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file that cannot be cut (here a directive) is parsed whole; a
    problem in each of its documents must not parse it again for each one
    (that was quadratic: 2,000 documents with a typo each took 84 s to load)."""
    from sailplane.config import yamldoc

    parses: list[bool] = []
    parse = yamldoc._parse

    def counting(
        text: str, file: str, first_line: int, aliases: AliasBudget, positions: bool
    ) -> object:
        parses.append(positions)
        return parse(text, file, first_line, aliases, positions=positions)

    monkeypatch.setattr(yamldoc, "_parse", counting)
    text = "%YAML 1.1\n---\n" + "\n---\n".join(f"kind: K\nspec: {{n: {i}}}" for i in range(300))
    documents = parse_documents(text, "f.yaml")
    located = [d.source.locate(("spec", "n")) for d in reversed(documents)]
    assert located[0] == Position(2 + 3 * 299 + 2, 11) and located[-1] == Position(4, 11)
    assert parses == [False, True]
