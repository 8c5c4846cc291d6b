"""Load a configuration directory into a :class:`MeshConfig`.

A directory state either parses completely or not at all: one file that is
not valid YAML (or is too large, cannot be read, repeats a key, has a key
that is not a string, or expands aliases past the budget) makes
:func:`load_dir` report ``parse_failed`` so the caller keeps serving the
previous configuration (nothing is half-applied: the rest of an edit that
spans files waits for the file that does not parse). Objects that parse but
are invalid are dropped with a diagnostic, or replaced by their last good
version when the caller passes the configuration in force (see assemble.py);
the rest is kept. A document that does not say what it is (a typo in kind or
apiVersion, no metadata.name) keeps what it defined in force too.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from sailplane.config.assemble import (
    ACTIVE,
    RETAINED,
    InForce,
    Key,
    ObjectRecord,
    assemble_mesh,
)
from sailplane.config.incremental import DocumentCache
from sailplane.config.interpret import interpret_document
from sailplane.config.yamldoc import AliasBudget, Document, excerpt, parse_documents
from sailplane.errors import YamlSyntaxError
from sailplane.model.hosts import DEFAULT_DOMAIN_SUFFIX
from sailplane.model.mesh import MeshConfig
from sailplane.model.source import Diagnostic, Position, Severity

YAML_SUFFIXES = (".yaml", ".yml")

# The largest file a load reads. The largest realistic one, benchmarks/meshgen's
# 1,000 services with subsets and 4 workloads each in one file, is 0.85 MB;
# a 50 MB file took 60 s and 4.8 GB to parse. `serve/validate --max-file-size`.
DEFAULT_MAX_FILE_SIZE = 8 * 1024 * 1024
# The limit for loads that are not told one (`sailplane validate` sets it
# through :func:`max_file_size`).
_MAX_FILE_SIZE: contextvars.ContextVar[int] = contextvars.ContextVar(
    "max_file_size", default=DEFAULT_MAX_FILE_SIZE
)


@contextlib.contextmanager
def max_file_size(limit: int) -> Iterator[None]:
    """Loads in this context (and threads started from it) read files of at
    most ``limit`` bytes unless told otherwise."""
    token = _MAX_FILE_SIZE.set(limit)
    try:
        yield
    finally:
        _MAX_FILE_SIZE.reset(token)


def _too_large(file: str, size: int, limit: int) -> Diagnostic:
    return Diagnostic(
        file,
        Position(1, 1),
        f"the file is {size:,} bytes, over the limit of {limit:,} (--max-file-size); "
        "it is not read",
    )


@dataclass(frozen=True, slots=True)
class LoadResult:
    mesh: MeshConfig | None  # None when some file did not parse
    diagnostics: tuple[Diagnostic, ...]
    objects: tuple[ObjectRecord, ...] = ()  # every object seen, in force or not
    files: int = 0

    @property
    def parse_failed(self) -> bool:
        return self.mesh is None

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.WARNING)

    def in_force(self) -> InForce | None:
        """What the next load may fall back to, if this one is applied."""
        if self.mesh is None:
            return None
        records: Mapping[Key, ObjectRecord] = {
            r.key: r for r in self.objects if r.state in (ACTIVE, RETAINED)
        }
        return InForce(self.mesh, records)


def config_files(root: Path) -> list[Path]:
    """Every YAML file under ``root``, sorted, hidden files and dirs skipped
    (editors' swap and temp files live there)."""
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix in YAML_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def load_dir(
    root: Path,
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
    previous: InForce | None = None,
    keep_going: bool = False,
    cache: DocumentCache | None = None,
    max_file_size: int | None = None,
) -> LoadResult:
    limit = _MAX_FILE_SIZE.get() if max_file_size is None else max_file_size
    texts, unread = read_files(root, limit)
    return load_texts(
        texts, domain_suffix, previous, keep_going, cache=cache, max_file_size=limit, unread=unread
    )


def read_files(root: Path, limit: int) -> tuple[list[tuple[str, str]], list[Diagnostic]]:
    """The ``(name, text)`` of every YAML file under ``root`` of at most
    ``limit`` bytes, and a diagnostic for each file that could not be read."""
    files = config_files(root)
    texts: list[tuple[str, str]] = []
    unread: list[Diagnostic] = []
    for path in files:
        name = display_name(path, root)
        try:
            size = path.stat().st_size
            if size > limit:  # never read it: reading is what costs
                unread.append(_too_large(name, size, limit))
                continue
            with path.open("rb") as file:
                data = file.read(limit + 1)  # it may have grown since
            if len(data) > limit:
                unread.append(_too_large(name, max(path.stat().st_size, len(data)), limit))
                continue
            # Universal newlines, as Path.read_text gives them.
            text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
            texts.append((name, text))
        except UnicodeDecodeError as exc:
            where = f"byte {exc.start}: {exc.reason}"
            unread.append(Diagnostic(name, Position(1, 1), f"not UTF-8 text ({where})"))
        except OSError as exc:
            unread.append(Diagnostic(name, Position(1, 1), f"cannot read: {exc.strerror}"))
    return texts, unread


def display_name(path: Path, root: Path) -> str:
    """How diagnostics name a file: relative to the config dir."""
    try:
        return str(path.relative_to(root.parent if root.is_file() else root))
    except ValueError:
        return str(path)


def load_texts(
    texts: Iterable[tuple[str, str]],
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
    previous: InForce | None = None,
    keep_going: bool = False,
    cache: DocumentCache | None = None,
    max_file_size: int | None = None,
    unread: Sequence[Diagnostic] = (),
) -> LoadResult:
    """Load ``(file name, text)`` pairs; the pure core of :func:`load_dir`.

    ``previous`` is the configuration in force, whose valid objects stand in
    for invalid new versions. ``keep_going`` checks every file that parses
    even when another does not (``sailplane validate``); the result still has
    no mesh, since a directory that does not parse is never applied.
    ``cache``, kept by a long-lived caller across loads of one directory,
    re-parses only what changed since the last load; the result is the same
    as without it, and unchanged objects are the very same objects.
    Files larger than ``max_file_size`` bytes are not parsed; ``unread``
    says which files :func:`load_dir` could not read (each is an error).
    """
    limit = _MAX_FILE_SIZE.get() if max_file_size is None else max_file_size
    digest = hashlib.sha256()
    documents: list[Document] = []
    syntax_errors: list[Diagnostic] = list(unread)
    names: list[str] = [d.file for d in unread]
    if cache is not None:
        cache.start_load()
    parse = cache.parse if cache is not None else parse_documents
    aliases = AliasBudget()
    for name, text in texts:
        names.append(name)
        if len(text) > limit // 4 and (size := len(text.encode())) > limit:
            syntax_errors.append(_too_large(name, size, limit))
            continue
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        try:
            documents.extend(parse(text, name, aliases=aliases))
        except YamlSyntaxError as exc:
            syntax_errors.append(cast(Diagnostic, exc.diagnostic))  # config errors carry them
        except Exception as exc:  # a bug of ours or PyYAML's: still a diagnostic, not a crash
            problem = excerpt(f"{type(exc).__name__}: {exc}", 200)
            syntax_errors.append(Diagnostic(name, Position(1, 1), f"cannot parse: {problem}"))
    count = len(names)
    if cache is not None:
        cache.forget_files_except(set(names))
    if syntax_errors and not keep_going:
        syntax_errors.sort(key=lambda d: (d.file, d.position.line, d.position.column))
        return LoadResult(None, tuple(syntax_errors), files=count)
    if cache is not None:
        interpreted = cache.interpret(documents, domain_suffix)
    else:
        interpreted = [interpret_document(doc, domain_suffix) for doc in documents]
    mesh, diagnostics, records = assemble_mesh(interpreted, domain_suffix, previous)
    diagnostics.extend(syntax_errors)
    diagnostics.sort(key=lambda d: (d.file, d.position.line, d.position.column))
    if syntax_errors:
        return LoadResult(None, tuple(diagnostics), tuple(records), count)
    mesh = mesh.with_fields(diagnostics=tuple(diagnostics), digest=digest.hexdigest())
    return LoadResult(mesh, tuple(diagnostics), tuple(records), count)


def object_changes(
    before: InForce | None, after: LoadResult, new: InForce | None = None
) -> list[tuple[str, str, str]]:
    """``(kind, event, namespace/name)`` for every object whose version in force
    differs between two loads; events are ``add``, ``update`` and ``delete``
    (as Istio's pilot_k8s_cfg_events). ``new``: ``after.in_force()``, if the
    caller has it."""
    if new is None:
        new = after.in_force()
    old_records = before.records if before else {}
    new_records = new.records if new else {}
    changes = []
    for key, cur in new_records.items():
        old = old_records.get(key)
        if old is cur:  # incremental loads keep unchanged records as they were
            continue
        if old is None:
            changes.append((key, "add"))
        elif old.digest != cur.digest:
            changes.append((key, "update"))
    changes.extend((key, "delete") for key in old_records if key not in new_records)
    return [(kind, event, f"{ns}/{name}") for (kind, ns, name), event in sorted(changes)]
