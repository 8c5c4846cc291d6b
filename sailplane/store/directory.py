"""The directory store: today's ``--config-dir``, files read as they are and
watched with watchdog (config/watch.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from sailplane.config.loader import read_files
from sailplane.config.watch import DirectoryWatcher
from sailplane.store.base import Change, StoreContents


class DirectoryStore:
    """A configuration directory as a :class:`~sailplane.store.base.ConfigStore`."""

    def __init__(
        self, root: Path, max_file_size: int, quiet: float = 0.1, max_wait: float = 1.0
    ) -> None:
        self.root = root
        self.max_file_size = max_file_size
        self.quiet = quiet
        self.max_wait = max_wait
        self._watcher: DirectoryWatcher | None = None

    @property
    def description(self) -> str:
        return str(self.root)

    @property
    def problem(self) -> str | None:
        return None  # an unreadable file is a diagnostic of the load, not a store outage

    def read(self) -> StoreContents:
        texts, unread = read_files(self.root, self.max_file_size)
        return StoreContents(tuple(texts), tuple(unread))

    def start(self) -> None:
        self._watcher = DirectoryWatcher(self.root, self.quiet, self.max_wait)
        self._watcher.start()

    async def changes(self) -> AsyncIterator[Change]:
        if self._watcher is None:
            self.start()
        assert self._watcher is not None
        async for burst in self._watcher.changes():
            yield Change(burst.first_seen)

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
