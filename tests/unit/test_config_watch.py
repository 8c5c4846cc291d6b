"""The directory watcher: which file events count, and debouncing.

Real watchdog on a temporary directory; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sailplane.config.watch import Burst, DirectoryWatcher


@pytest.fixture
async def watcher(tmp_path: Path) -> AsyncIterator[DirectoryWatcher]:
    watch = DirectoryWatcher(tmp_path, quiet=0.05, max_wait=0.3)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()


class Bursts:
    def __init__(self, watcher: DirectoryWatcher) -> None:
        self.changes = watcher.changes()

    async def next(self, timeout: float = 3.0) -> Burst:
        return await asyncio.wait_for(anext(self.changes), timeout)

    async def none(self, within: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            burst = await self.next(within)
            pytest.fail(f"unexpected burst {burst}")


async def test_create_modify_delete_and_rename_are_changes(
    watcher: DirectoryWatcher, tmp_path: Path
) -> None:
    bursts = Bursts(watcher)
    vs = tmp_path / "vs.yaml"
    vs.write_text("a: 1\n")
    assert any(p.endswith("vs.yaml") for p in (await bursts.next()).paths)
    vs.write_text("a: 2\n")
    await bursts.next()
    vs.rename(tmp_path / "renamed.yml")
    await bursts.next()
    (tmp_path / "renamed.yml").unlink()
    await bursts.next()
    await bursts.none()


async def test_an_editors_atomic_save_is_a_change(
    watcher: DirectoryWatcher, tmp_path: Path
) -> None:
    bursts = Bursts(watcher)
    (tmp_path / "vs.yaml").write_text("a: 1\n")
    await bursts.next()
    for temp in (".vs.yaml.swp", "vs.yaml.tmp~", "4913"):
        (tmp_path / temp).write_text("a: 2\n")
        os.replace(tmp_path / temp, tmp_path / "vs.yaml")
        await bursts.next()


async def test_other_files_are_not_changes(watcher: DirectoryWatcher, tmp_path: Path) -> None:
    bursts = Bursts(watcher)
    (tmp_path / "README.md").write_text("notes\n")
    (tmp_path / ".vs.yaml.swp").write_text("swap\n")
    (tmp_path / "vs.yaml~").write_text("backup\n")
    await bursts.none()


async def test_subdirectories_are_watched(watcher: DirectoryWatcher, tmp_path: Path) -> None:
    bursts = Bursts(watcher)
    (tmp_path / "team-a").mkdir()
    await bursts.next()
    (tmp_path / "team-a" / "vs.yaml").write_text("a: 1\n")
    assert any("team-a" in p for p in (await bursts.next()).paths)


async def test_a_burst_of_saves_is_one_change(watcher: DirectoryWatcher, tmp_path: Path) -> None:
    bursts = Bursts(watcher)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(20):
        (tmp_path / "vs.yaml").write_text(f"weight: {i}\n")
        await asyncio.sleep(0.002)
    assert loop.time() - started < 0.1
    burst = await bursts.next()
    assert len(burst.paths) >= 20
    assert burst.first_seen >= started
    await bursts.none()


async def test_a_never_ending_burst_is_cut_at_max_wait(
    watcher: DirectoryWatcher, tmp_path: Path
) -> None:
    bursts = Bursts(watcher)
    loop = asyncio.get_running_loop()

    async def keep_saving() -> None:
        for i in range(40):  # every 25 ms for a second: never 50 ms quiet
            (tmp_path / "vs.yaml").write_text(f"weight: {i}\n")
            await asyncio.sleep(0.025)

    saving = asyncio.create_task(keep_saving())
    try:
        first = await bursts.next()
        assert loop.time() - first.first_seen < 0.3 + 0.2  # max_wait, plus scheduling slack
        assert not saving.done()
    finally:
        saving.cancel()


async def test_a_complete_change_after_quiet_is_reported_at_once(tmp_path: Path) -> None:
    """Leading edge: an atomic rename after a quiet period does not wait for
    the quiet time (2 s here); what follows it within that time is a burst
    of its own, reported on the trailing edge."""
    watch = DirectoryWatcher(tmp_path, quiet=2.0, max_wait=4.0)
    watch.start()
    try:
        bursts = Bursts(watch)
        loop = asyncio.get_running_loop()
        (tmp_path / ".vs.yaml.tmp").write_text("a: 1\n")
        saved = loop.time()
        os.replace(tmp_path / ".vs.yaml.tmp", tmp_path / "vs.yaml")
        first = await bursts.next(timeout=1.5)
        assert loop.time() - saved < 1.5  # not after the 2 s quiet time
        assert len(first.paths) == 1
        # Right after it: written in place, then renamed again; one trailing burst.
        (tmp_path / "vs.yaml").write_text("a: 2\n")
        (tmp_path / ".vs.yaml.tmp").write_text("a: 3\n")
        os.replace(tmp_path / ".vs.yaml.tmp", tmp_path / "vs.yaml")
        second = await bursts.next(timeout=6.0)
        assert loop.time() - saved >= 2.0  # waited for the quiet time
        assert len(second.paths) >= 2
    finally:
        watch.stop()


async def test_a_write_in_progress_waits_for_the_quiet_time(tmp_path: Path) -> None:
    """A file written in place (no rename) is not read at its first event."""
    watch = DirectoryWatcher(tmp_path, quiet=1.0, max_wait=3.0)
    watch.start()
    try:
        bursts = Bursts(watch)
        loop = asyncio.get_running_loop()
        with (tmp_path / "vs.yaml").open("w") as out:
            out.write("a: 1\n")
            out.flush()
            written = loop.time()
            await asyncio.sleep(0.3)  # still open: half a file, as far as anyone knows
            out.write("b: 2\n")
        burst = await bursts.next(timeout=4.0)
        assert loop.time() - written >= 1.0
        assert (tmp_path / "vs.yaml").read_text() == "a: 1\nb: 2\n"
        assert len(burst.paths) >= 2
    finally:
        watch.stop()
