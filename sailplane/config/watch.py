"""Watch a configuration directory and report settled changes.

watchdog calls us from its own thread; events are handed to the asyncio loop
and debounced there: a change is reported once the directory has been quiet
for ``quiet`` seconds, or at the latest ``max_wait`` seconds after the first
event of a burst, so a flurry of saves is one reload.

Leading edge: a change that arrives complete after a quiet period (an
editor's or a tool's atomic rename into place, a deletion, a file closed
after writing with nothing else pending) is reported at once rather than
``quiet`` seconds later; whatever follows it within ``quiet`` is a burst of
its own, reported on the trailing edge as above. A write still in progress
(``modified``) never starts a leading-edge reload, so a file is not read
half written.

Relevant events: any change to a ``.yaml``/``.yml`` file that is not hidden,
in the directory or below it, including the rename that ends an editor's
atomic save (temp file -> name) and a file renamed away; directory creation,
moves and deletion; and Kubernetes' ConfigMap swap of ``..data``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from sailplane.config.loader import YAML_SUFFIXES

# Kubernetes mounts a ConfigMap as symlinks into ``..data``, which it swaps atomically.
_ATOMIC_WRITER_DIR = "..data"


@dataclass(frozen=True, slots=True)
class Burst:
    """One settled change: the paths touched and when the first was seen
    (``time.monotonic()``, the clock of the asyncio loop)."""

    paths: tuple[str, ...]
    first_seen: float


def _relevant(path: str | bytes) -> bool:
    name = Path(path if isinstance(path, str) else path.decode()).name
    if name == _ATOMIC_WRITER_DIR:
        return True
    return not name.startswith(".") and name.endswith(YAML_SUFFIXES)


# Events after which the file (or directory) is complete as it will be read.
_SETTLED = frozenset({"moved", "deleted", "closed"})

# (time.monotonic() when seen, path, whether the change is complete)
_Event = tuple[float, str, bool]


class _Forwarder(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[_Event]) -> None:
        self.loop = loop
        self.queue = queue

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type == "modified":
            return  # a file in it changed: that file's own event says whether it matters
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        if event.is_directory or any(_relevant(p) for p in paths if p):
            settled = event.event_type in _SETTLED or (
                event.is_directory and event.event_type == "created"
            )
            item = (time.monotonic(), str(event.src_path), settled)
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class DirectoryWatcher:
    """``async for burst in watcher.changes(): reload()``."""

    def __init__(self, root: Path, quiet: float = 0.1, max_wait: float = 1.0) -> None:
        self.root = root
        self.quiet = quiet
        self.max_wait = max_wait
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._queue: asyncio.Queue[_Event] = asyncio.Queue()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        observer = Observer()
        observer.schedule(_Forwarder(loop, self._queue), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    async def changes(self) -> AsyncIterator[Burst]:
        loop = asyncio.get_running_loop()
        last_seen = -math.inf
        while True:
            first_seen, path, settled = await self._queue.get()
            after_quiet = first_seen - last_seen >= self.quiet
            last_seen = first_seen
            if settled and after_quiet and self._queue.empty():
                yield Burst((path,), first_seen)  # the leading edge
                continue
            paths = [path]
            deadline = first_seen + self.max_wait  # loop.time() is time.monotonic()
            while True:
                timeout = min(self.quiet, deadline - loop.time())
                if timeout <= 0:
                    break
                try:
                    last_seen, path, _ = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                paths.append(path)
            yield Burst(tuple(paths), first_seen)
