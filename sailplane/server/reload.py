"""Putting configurations in force.

One rule: what is served is always a complete, validated configuration. A
directory that does not parse changes nothing; an object that does not
validate is left out (or keeps its last good version, see
config/assemble.py); every problem is logged once, counted on ``/metrics``
and listed at ``/debug/configz``.

Reading and parsing the directory happen in a worker thread
(:meth:`Reloader.reload_off_loop`), so that ADS streams, pushes and the
monitor keep answering while a large or hostile file is read; only applying
the result to the controller runs on the event loop. Loads are bounded: a
size limit per file (``--max-file-size``), a budget for alias expansion
(config/yamldoc.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sailplane.config.assemble import InForce
from sailplane.config.incremental import DocumentCache
from sailplane.config.loader import LoadResult, load_texts, object_changes
from sailplane.errors import StoreUnavailable
from sailplane.logs import event
from sailplane.model.source import Diagnostic, Position, Severity
from sailplane.server.controller import Controller
from sailplane.server.ops.metrics import Metrics
from sailplane.store import ConfigStore, DirectoryStore
from sailplane.xds import SnapshotCache

log = logging.getLogger("sailplane")
config_log = logging.getLogger("sailplane.config")

_LEVELS = {Severity.ERROR: logging.ERROR, Severity.WARNING: logging.WARNING}


@dataclass(frozen=True, slots=True)
class Loaded:
    """A load, and what applying it needs that takes a pass over every
    object: worked out beside the load, off the event loop. Valid for the
    configuration in force when it was made; loads and applies take turns."""

    result: LoadResult
    in_force: InForce | None = None
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, result: LoadResult, before: InForce | None) -> Loaded:
        if result.mesh is None:
            return cls(result)
        in_force = result.in_force()
        return cls(
            result,
            in_force,
            object_changes(before, result, in_force),
            Counter((o.kind, o.state) for o in result.objects),
        )


class Reloader:
    """Loads the configuration (a directory, or the ``store`` given) and
    applies what loads to the controller; remembers what is in force and
    what the last load said. A store that cannot be reached is a load that
    does not parse: the configuration in force stays, and ``store.problem``
    says why until a read succeeds again."""

    def __init__(
        self,
        config_dir: Path,
        max_file_size: int,
        controller: Controller,
        cache: SnapshotCache,
        metrics: Metrics,
        touch: Callable[[], None],
        store: ConfigStore | None = None,
    ) -> None:
        """``touch`` is called after each applied configuration, before the
        pushes it causes (the heap keeper freezes what is young then, and
        settles after a burst of work)."""
        self.config_dir = config_dir
        self.store: ConfigStore = store or DirectoryStore(config_dir, max_file_size)
        self.source = self.store.description  # what logs and views call it
        self.max_file_size = max_file_size
        self.controller = controller
        self.cache = cache
        self.metrics = metrics
        self._touch = touch
        self.last_result: LoadResult | None = None  # the last load, applied or not
        self.last_load_applied = False  # whether what is in force is the last load
        # One load at a time: the document cache is not thread-safe.
        self._loading = asyncio.Lock()
        self.applied_result: LoadResult | None = None  # the load in force
        self.in_force: InForce | None = None
        # Parsed documents and objects of the last load: a reload re-parses only what changed.
        self.documents = DocumentCache()
        self.applied_at: float | None = None
        self._reported: set[str] = set()
        self.applied = 0  # configurations put in force so far

    def reload(self, change_seen_at: float | None = None) -> bool:
        """Load the config dir; apply it if it parses. Returns whether applied.

        ``change_seen_at`` (monotonic) is when the file change was first seen,
        for the convergence-time histogram. Blocks while it reads: the running
        server uses :meth:`reload_off_loop`."""
        started = time.monotonic()
        return self._apply(self._load(), started, change_seen_at)

    async def reload_off_loop(self, change_seen_at: float | None = None) -> bool:
        """:meth:`reload`, reading and parsing in a worker thread."""
        async with self._loading:
            started = time.monotonic()
            loaded = await asyncio.to_thread(self._load)
            return self._apply(loaded, started, change_seen_at)

    def _load(self) -> Loaded:
        """Read the directory; never raises (a failure is a diagnostic)."""
        try:
            contents = self.store.read()
        except StoreUnavailable as exc:
            message = f"the config store is down: {exc}; the configuration in force stays"
            return Loaded(LoadResult(None, (Diagnostic(self.source, Position(1, 1), message),)))
        except Exception as exc:  # a bug: reported like any problem, never a crash
            log.exception("reading %s failed", self.source)
            return Loaded(LoadResult(None, (self._failure("reading", exc),)))
        try:
            result = load_texts(
                contents.texts,
                previous=self.in_force,
                cache=self.documents,
                max_file_size=self.max_file_size,
                unread=contents.unread,
            )
            return Loaded.of(result, self.in_force)
        except Exception as exc:  # a bug: reported like any problem, never a crash
            log.exception("loading %s failed", self.source)
            self.documents = DocumentCache()  # it may be half-updated
            return Loaded(LoadResult(None, (self._failure("loading", exc),)))

    def _failure(self, what: str, exc: BaseException) -> Diagnostic:
        return Diagnostic(
            self.source,
            Position(1, 1),
            f"{what} failed: {type(exc).__name__}: {str(exc)[:200]}",
        )

    def _apply(self, loaded: Loaded, started: float, change_seen_at: float | None) -> bool:
        result = loaded.result
        try:
            return self._apply_result(loaded, started, change_seen_at)
        except Exception as exc:  # never let one bad reload stop the server
            # (The controller may have put it in force for some proxies already.)
            log.exception("applying the configuration failed part way")
            self.last_load_applied = False
            self.last_result = dataclasses.replace(
                result, mesh=None, diagnostics=(*result.diagnostics, self._failure("applying", exc))
            )
            return False

    def _apply_result(self, loaded: Loaded, started: float, change_seen_at: float | None) -> bool:
        result = self.last_result = loaded.result
        self.last_load_applied = False
        news = self._report(loaded)
        if result.mesh is None:
            self.metrics.reloads.labels("rejected").inc()
            serving = (
                "still serving the last good one"
                if self.controller.mesh is not None
                else "there is no last good one: nothing is served until the directory loads"
            )
            event(
                config_log,
                logging.ERROR if news else logging.DEBUG,  # said already, unless new
                "config.rejected",
                f"configuration not applied; {serving}",
                errors=len(result.errors),
                dir=self.source,
            )
            return False
        if self.controller.mesh is not None and self.controller.mesh.digest == result.mesh.digest:
            self.metrics.reloads.labels("unchanged").inc()
            self.last_load_applied = True
            return False
        updated = self.controller.apply(result.mesh)
        self.metrics.snapshots_changed(self.controller.last_changed, change_seen_at)
        changes = loaded.changes
        for kind, what, _ in changes:
            self.metrics.config_events.labels(kind, what).inc()
        self.applied_result, self.in_force = result, loaded.in_force
        self.last_load_applied = True
        self.applied += 1
        self._touch()
        self.applied_at = time.time()
        self.metrics.reloads.labels("applied").inc()
        self.metrics.last_applied.set(self.applied_at)
        states: Counter[str] = Counter()
        for (_, state), count in loaded.counts.items():
            states[state] += count
        events = Counter(what for _, what, _ in changes)
        event(
            config_log,
            logging.INFO,
            "config.applied",
            "config applied",
            version=self.version,
            objects=states["active"] + states["retained"],
            retained=states["retained"],
            rejected=states["rejected"],
            services=len(result.mesh.services),
            workloads=len(result.mesh.workloads),
            added=events["add"],
            updated=events["update"],
            deleted=events["delete"],
            proxies_updated=updated,
            ms=round((time.monotonic() - started) * 1000, 1),
            detail={"changes": [f"{what} {kind} {name}" for kind, what, name in changes]},
        )
        return True

    @property
    def version(self) -> str:
        mesh = self.controller.mesh
        return mesh.digest[:12] if mesh else ""

    def _report(self, loaded: Loaded) -> int:
        """Log each problem once, when it appears; count the new errors.
        Returns how many problems are new."""
        result = loaded.result
        current, news = report_new_problems(result.diagnostics, self._reported, self.metrics)
        # A load that does not parse says nothing about the other problems.
        self._reported = current | (self._reported if result.mesh is None else set())
        if result.mesh is not None:
            self.metrics.count_objects(loaded.counts)
        return news


def report_new_problems(
    diagnostics: Iterable[Diagnostic], reported: set[str], metrics: Metrics
) -> tuple[set[str], int]:
    """Log each of ``diagnostics`` not in ``reported`` (their formatted
    lines) once, as a config event, and count the new errors. Returns the
    lines of ``diagnostics`` and how many were new."""
    current = {d.format(): d for d in diagnostics}
    new_errors = news = 0
    for line, diagnostic in current.items():
        if line in reported:
            continue
        news += 1
        new_errors += diagnostic.severity is Severity.ERROR
        event(
            config_log,
            _LEVELS.get(diagnostic.severity, logging.INFO),
            f"config.{diagnostic.severity.value}",
            line,
            detail=diagnostic.to_json(),
        )
    if new_errors:
        metrics.config_errors.inc(new_errors)
    return set(current), news
