"""The demo's control plane: a :class:`ControlPlane` on a thread of its own.

The demo reads the plane's state directly (the mesh in force, the last
load and its problems) and does blocking work (starting processes, HTTP
probes) on the main thread; with its own event loop on its own thread, the
control plane keeps serving xDS meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import suppress

from sailplane.errors import DemoError
from sailplane.server.plane import ControlPlane, ServeOptions


class PlaneThread:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.plane: ControlPlane | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sailplane", daemon=True)

    def start(self) -> ControlPlane:
        """Start, and return once the plane serves (raises DemoError if it cannot)."""
        self._thread.start()
        self._started.wait()
        if self._error is not None or self.plane is None:
            raise DemoError(f"the control plane did not start: {self._error}")
        return self.plane

    def _run(self) -> None:
        with suppress(BaseException):  # reported to start() through self._error
            asyncio.run(self._main())
        self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        plane = ControlPlane(self.options)
        try:
            await plane.start()
        except BaseException as exc:
            self._error = exc
            await plane.stop()
            raise
        self.plane = plane
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await plane.stop()

    def stop(self) -> None:
        """Stop serving and wait for the thread (servers closed, watcher stopped)."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            with suppress(RuntimeError):  # the loop has closed already
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


class ChangeLog(logging.Handler):
    """What the last applied configuration changed, from the plane's
    ``config.applied`` log events (the plane logs them; nobody else keeps them)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.applied = 0
        self.last = "nothing applied yet"

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "sailplane_event", "") != "config.applied":
            return
        self.applied += 1
        changes = getattr(record, "sailplane_detail", {}).get("changes") or []
        if self.applied == 1:
            self.last = f"loaded {len(changes)} objects"
        elif changes:
            more = f" (+{len(changes) - 2} more)" if len(changes) > 2 else ""
            self.last = ", ".join(changes[:2]) + more
        else:
            self.last = "no object changed"
