"""Sync mode: ``serve --config-dir DIR --config-store URL``.

This replica keeps the store equal to DIR, exactly as ``sailplane apply
--prune -f DIR`` would (store/apply.py: validate, write only the valid
objects, one transaction), after the first start and after every settled
change of DIR. It does not serve DIR: like every other replica it serves what
the store holds, reloaded by the store's watch, so all replicas serve the same
thing and the syncer's own proxies see an edit when the others do.

A rejected object is not written, so the store keeps its last good version
(it is in DIR, so ``--prune`` does not delete it); its diagnostics are logged
once with the file and line, as a directory load logs them, counted in
``sailplane_config_errors_total`` and listed at ``/debug/configz`` under
``sync``. When the store cannot be written (etcd down, or another writer got
in between), the syncer retries on the next change of DIR and every
``retry`` seconds until it succeeds; the configuration in force stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path

from sailplane.config.watch import DirectoryWatcher
from sailplane.errors import StoreError
from sailplane.logs import event
from sailplane.model.source import Diagnostic
from sailplane.server.ops.metrics import Metrics
from sailplane.server.reload import report_new_problems
from sailplane.store.apply import Plan, commit, plan_apply
from sailplane.store.etcdstore import EtcdStore

log = logging.getLogger("sailplane")
config_log = logging.getLogger("sailplane.config")


# How often a sync that failed (the store unreachable) is tried again when
# DIR does not change meanwhile.
RETRY = 5.0


def file_diagnostics(plan: Plan) -> list[Diagnostic]:
    """Every problem of a plan, named by the file and line it came from (an
    object's diagnostics name it ``etcd:KIND/NS/NAME (from FILE)`` in the
    validation of the overlay; here it is FILE, as a directory load says)."""
    found = list(plan.problems)
    for outcome in plan.outcomes:
        obj = outcome.obj
        found += [
            dataclasses.replace(d, file=obj.origin) if d.file == obj.display_name else d
            for d in outcome.diagnostics
        ]
    return found


class Syncer:
    """Applies a directory into the store (``apply --prune``) whenever it changes."""

    def __init__(
        self,
        root: Path,
        store: EtcdStore,
        metrics: Metrics,
        quiet: float = 0.1,
        max_wait: float = 1.0,
        retry: float = RETRY,
    ) -> None:
        """``store`` is the syncer's own (its own connection): a large apply
        never queues behind the reloader's reads."""
        self.root = root
        self.store = store
        self.metrics = metrics
        self.retry = retry
        self._watcher = DirectoryWatcher(root, quiet, max_wait)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._reported: set[str] = set()
        self.problem: str | None = None  # why the last sync failed, until one succeeds
        self.diagnostics: tuple[Diagnostic, ...] = ()  # of the last sync that read DIR
        self.synced_at: float | None = None  # time.time() of the last successful sync
        self.revision = 0  # the store's revision after the last write
        self.syncs = 0  # successful syncs so far

    async def start(self) -> None:
        """Watch DIR, sync once now (the first load then reads the result),
        then sync on every change; a failed sync is retried in the background."""
        self._watcher.start()
        self._listener = asyncio.create_task(self._listen())
        if not await self.sync():
            self._wake.set()
        self._task = asyncio.create_task(self._run())

    async def _listen(self) -> None:
        async for _ in self._watcher.changes():
            self._wake.set()

    async def _run(self) -> None:
        while True:
            if self.problem is None:
                await self._wake.wait()
            else:  # failed: on the next change or after `retry`, whichever comes first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.retry)
            self._wake.clear()  # a change during the sync wakes the next round
            await self.sync()

    async def sync(self) -> bool:
        """Apply DIR into the store once (in a thread); whether it was written."""
        started = time.monotonic()
        try:
            plan, revision = await asyncio.to_thread(self._apply)
        except StoreError as exc:
            self._failed(str(exc))
            return False
        except Exception as exc:  # a bug: logged, retried, never the end of the syncer
            log.exception("syncing %s into the store failed", self.root)
            self._failed(f"{type(exc).__name__}: {str(exc)[:200]}")
            return False
        if self.problem is not None:
            log.info("syncing %s into the store works again", self.root)
        self.problem = None
        self.syncs += 1
        self.synced_at = time.time()
        self.revision = revision or self.revision
        self._report(file_diagnostics(plan))
        written = [o for o in plan.outcomes if o.action in ("created", "configured")]
        rejected = [o for o in plan.outcomes if o.action in ("rejected", "refused")]
        event(
            config_log,
            logging.INFO if plan.writes else logging.DEBUG,
            "config.synced",
            f"{self.root} synced into the store" if plan.writes else f"{self.root} unchanged",
            written=len(written),
            pruned=len(plan.pruned),
            rejected=len(rejected),
            revision=self.revision,
            ms=round((time.monotonic() - started) * 1000, 1),
            detail={
                "written": [o.obj.path for o in written],
                "pruned": plan.pruned,
                "rejected": [o.obj.path for o in rejected],
            },
        )
        return True

    def _apply(self) -> tuple[Plan, int]:
        plan = plan_apply(self.store, self.root, prune=True)
        return plan, commit(self.store, plan) if plan.writes else 0

    def _failed(self, problem: str) -> None:
        if problem != self.problem:
            event(
                config_log,
                logging.WARNING,
                "config.sync_failed",
                f"syncing {self.root} into the store failed: {problem}; retrying on the next "
                f"change and every {self.retry:g}s (the configuration in force stays)",
            )
        self.problem = problem

    def _report(self, diagnostics: list[Diagnostic]) -> None:
        """Log each problem once, when it appears; count the new errors (as
        the reloader does for a directory load)."""
        self.diagnostics = tuple(diagnostics)
        self._reported, _ = report_new_problems(diagnostics, self._reported, self.metrics)

    def view(self) -> dict[str, object]:
        """``/debug/configz``'s ``sync``."""
        return {
            "dir": str(self.root),
            "up": self.problem is None,
            "problem": self.problem,
            "synced_at": self.synced_at,
            "revision": self.revision,
            "diagnostics": [d.to_json() for d in self.diagnostics],
        }

    async def stop(self) -> None:
        for task in (self._task, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher.stop()
        self.store.stop()
