"""Watch a configuration directory and report settled changes.

watchdog calls us from its own thread; events are handed to the asyncio loop
and debounced there: a change is reported once the directory has been quiet
for ``quiet`` seconds, or at the latest ``max_wait`` seconds after the first
event of a burst, so a flurry of saves is one reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from sailplane.config.loader import YAML_SUFFIXES


def _relevant(path: str | bytes) -> bool:
    name = Path(path if isinstance(path, str) else path.decode()).name
    return not name.startswith(".") and name.endswith(YAML_SUFFIXES)


class _Forwarder(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
        self.loop = loop
        self.queue = queue

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        if event.is_directory or any(_relevant(p) for p in paths if p):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, str(event.src_path))


class DirectoryWatcher:
    """``async for _ in watcher.changes(): reload()``."""

    def __init__(self, root: Path, quiet: float = 0.1, max_wait: float = 1.0) -> None:
        self.root = root
        self.quiet = quiet
        self.max_wait = max_wait
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._queue: asyncio.Queue[str] = asyncio.Queue()

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

    async def changes(self) -> AsyncIterator[list[str]]:
        loop = asyncio.get_running_loop()
        while True:
            burst = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while True:
                timeout = min(self.quiet, deadline - loop.time())
                if timeout <= 0:
                    break
                try:
                    burst.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            yield burst
