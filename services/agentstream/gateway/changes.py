"""Wakes request handlers (SSE streams) when the view changed, across the thread boundary:
the view reader calls ``notify`` from its thread; handlers ``await wait(...)`` on the loop."""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self.generation = 0

    def notify(self) -> None:
        """Thread-safe: the view changed."""
        self._loop.call_soon_threadsafe(self._bump)

    def _bump(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()  # later waiters wait for the next change

    async def wait(self, seen: int, timeout: float) -> int:
        """Return once the generation passed ``seen`` or ``timeout`` s went by; the generation."""
        if self.generation == seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        return self.generation
