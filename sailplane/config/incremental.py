"""Reuse what the last load parsed: :class:`DocumentCache`.

A running control plane re-loads its whole directory on every change, and
parsing is nearly all the cost of a load (1,000 services and their rules are
5,000 documents: about 2 s). One edit changes one document, so the cache
keeps, per file, the text and its documents, and per document what it
defines (interpret.py):

- a file whose text did not change keeps its documents;
- a changed file is cut at its ``---`` lines (yamldoc.split_documents) and
  only the pieces whose text is new are parsed; a piece that only moved is
  shifted to its new lines, never reused with stale positions;
- a document that is the same object as last time keeps its interpretation:
  the same model objects (``is``), so that later stages can skip what did
  not change; a shifted one gets a shifted copy of its interpretation (new
  objects: their ``source`` differs), which costs a tenth of reading it.

Anything unusual falls back to a plain parse of the whole file: a text that
cannot be cut safely, and any piece with a syntax error (the error must read
exactly as a cold load reports it). Everything that involves several
documents still runs on every load, in assemble.py, so a cached load gives
the same result as a cold one.

One cache serves one sequence of loads (one directory); it is not
thread-safe.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import cast

from sailplane.config.interpret import Interpreted, interpret_document, shift_interpreted
from sailplane.config.yamldoc import (
    AliasBudget,
    Document,
    parse_documents,
    shift_document,
    split_documents,
)
from sailplane.errors import AliasBudgetError, YamlSyntaxError
from sailplane.model.source import Diagnostic

# piece text -> first line -> its documents
_Pieces = dict[str, dict[int, tuple[Document, ...]]]


@dataclass(slots=True)
class _File:
    text: str
    documents: tuple[Document, ...]
    error: Diagnostic | None = None  # the text does not parse: what a load reports
    # The pieces of the last text that parsed (empty when it was not cut).
    pieces: _Pieces = field(default_factory=dict)


@dataclass(slots=True)
class CacheStats:
    """What the last load took from the cache (for tests and benchmarks)."""

    files_reused: int = 0
    pieces_reused: int = 0
    pieces_shifted: int = 0
    pieces_parsed: int = 0
    files_parsed_whole: int = 0
    documents_interpreted: int = 0
    documents_shifted: int = 0


class DocumentCache:
    """Parsed files and interpreted documents, kept from one load to the next.

    :func:`sailplane.config.loader.load_texts` calls :meth:`parse` for each
    file, :meth:`forget_files_except` once the files are known, and
    :meth:`interpret` for the documents of a directory that parses.
    """

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}
        # id(document) -> (document, domain suffix, interpretation); holding
        # the document keeps its id from being reused by another object.
        self._interpreted: dict[int, tuple[Document, str, Interpreted]] = {}
        # id(shifted document) -> (it, the document it is a shifted copy of)
        self._moved: dict[int, tuple[Document, Document]] = {}
        self.stats = CacheStats()

    def parse(self, text: str, file: str, aliases: AliasBudget | None = None) -> Sequence[Document]:
        """:func:`parse_documents` of the text, reusing what did not change.

        Raises :class:`YamlSyntaxError` exactly as ``parse_documents`` does."""
        cached = self._files.get(file)
        if cached is not None and cached.text == text:
            self.stats.files_reused += 1
            if cached.error is not None:
                raise YamlSyntaxError(cached.error)
            return cached.documents
        try:
            parsed = self._parse_changed(text, file, cached.pieces if cached else {}, aliases)
        except YamlSyntaxError as exc:
            # Keep the pieces of the last good text: the fix is likely to bring them back.
            failed = cast(Diagnostic, exc.diagnostic)  # config errors carry Diagnostics
            self._files[file] = _File(text, (), failed, cached.pieces if cached else {})
            raise
        self._files[file] = parsed
        return parsed.documents

    def _parse_changed(
        self, text: str, file: str, previous: _Pieces, aliases: AliasBudget | None
    ) -> _File:
        split = split_documents(text)
        if split is None:
            return self._parse_whole(text, file, aliases)
        pieces: _Pieces = {}
        documents: list[Document] = []
        stats = self.stats
        for line, piece in split:
            known = previous.get(piece)
            found = known.get(line) if known else None
            if found is not None:
                stats.pieces_reused += 1
            elif known:
                # The same text elsewhere in the file: the positions move with it.
                base, docs = next(iter(known.items()))
                found = tuple(shift_document(doc, line - base) for doc in docs)
                self._moved.update(
                    (id(new), (new, doc)) for new, doc in zip(found, docs, strict=True)
                )
                stats.pieces_shifted += 1
            else:
                try:
                    found = tuple(parse_documents(piece, file, line, aliases))
                except AliasBudgetError:
                    raise  # parsing the whole again would spend the budget twice
                except YamlSyntaxError:
                    return self._parse_whole(text, file, aliases)
                stats.pieces_parsed += 1
            pieces.setdefault(piece, {})[line] = found
            documents.extend(found)
        return _File(text, tuple(documents), pieces=pieces)

    def _parse_whole(self, text: str, file: str, aliases: AliasBudget | None) -> _File:
        """A cold parse (raises as a cold load does); not cut into pieces."""
        self.stats.files_parsed_whole += 1
        return _File(text, tuple(parse_documents(text, file, aliases=aliases)))

    def forget_files_except(self, files: Collection[str]) -> None:
        """Drop what is cached for files that are gone."""
        for name in [name for name in self._files if name not in files]:
            del self._files[name]

    def interpret(self, documents: Sequence[Document], domain_suffix: str) -> list[Interpreted]:
        """:func:`interpret_document` of each document, the same object as
        last time for a document that is the same object as last time."""
        previous = self._interpreted
        current: dict[int, tuple[Document, str, Interpreted]] = {}
        broken = {name for name, cached in self._files.items() if cached.error is not None}
        if broken:
            # `sailplane validate` goes on past a file that does not parse;
            # what its last good text defined is likely to come back with the fix.
            current.update((k, v) for k, v in previous.items() if v[0].source.file in broken)
        out: list[Interpreted] = []
        for doc in documents:
            hit = previous.get(id(doc))
            if hit is not None and hit[0] is doc and hit[1] == domain_suffix:
                item = hit[2]
            elif (base := self._moved_from(doc, domain_suffix)) is not None:
                item = shift_interpreted(base, doc, domain_suffix)
                self.stats.documents_shifted += 1
            else:
                item = interpret_document(doc, domain_suffix)
                self.stats.documents_interpreted += 1
            current[id(doc)] = (doc, domain_suffix, item)
            out.append(item)
        self._interpreted = current
        self._moved.clear()
        return out

    def _moved_from(self, doc: Document, domain_suffix: str) -> Interpreted | None:
        """The interpretation of the document ``doc`` is a shifted copy of."""
        moved = self._moved.get(id(doc))
        if moved is None or moved[0] is not doc:
            return None
        hit = self._interpreted.get(id(moved[1]))
        if hit is None or hit[0] is not moved[1] or hit[1] != domain_suffix:
            return None
        return hit[2]

    def start_load(self) -> None:
        """Reset :attr:`stats` for a new load."""
        self.stats = CacheStats()
