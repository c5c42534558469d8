"""Wakes the SSE streams of the tasks the view just changed, across the thread boundary: the
view reader calls ``notify(task_ids)`` from its thread; a stream ``await``s its own watch on
the loop.

Per task, not one event for all: with one shared event every change woke every open stream,
and each then read the store and its connection, so the work per change grew with the
streams (200 open streams added seconds to a submission in bench/gateway_load.py). Now a
change wakes the streams of its own tasks; ``notify(None)`` (the view caught up) wakes all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterator


class Watch:
    """What one stream waits on: the changes of one task."""

    def __init__(self) -> None:
        self.generation = 0
        self.streams = 0  # open streams of the task (a watch is dropped when the last ends)
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()  # later waiters wait for the next change

    async def wait(self, seen: int, timeout: float) -> int:
        """Return once the generation passed ``seen`` or ``timeout`` s went by; the generation."""
        if self.generation == seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        return self.generation


class Changes:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watches: dict[str, Watch] = {}

    def notify(self, task_ids: Collection[str] | None = None) -> None:
        """Thread-safe: the view changed for ``task_ids`` (None: for every task)."""
        self._loop.call_soon_threadsafe(self._bump, None if task_ids is None else tuple(task_ids))

    def _bump(self, task_ids: tuple[str, ...] | None) -> None:
        if task_ids is None:
            watches = list(self._watches.values())
        else:
            watches = [w for w in map(self._watches.get, task_ids) if w is not None]
        for watch in watches:
            watch.bump()

    @contextlib.contextmanager
    def watching(self, task_id: str) -> Iterator[Watch]:
        """The watch of ``task_id`` while the block runs (one per task, shared by its streams)."""
        watch = self._watches.setdefault(task_id, Watch())
        watch.streams += 1
        try:
            yield watch
        finally:
            watch.streams -= 1
            if watch.streams == 0:
                self._watches.pop(task_id, None)
