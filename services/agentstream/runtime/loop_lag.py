"""How late a worker's event loop runs what is due: a timer every ``interval`` seconds,
and the time between when it was due and when it ran.

A callback made ready (a delivery acknowledgement settled, a model reply, a timer) runs
after every callback ahead of it in the loop's queue; with hundreds of agent loops in one
worker that queue fills in bursts. The lag is what such a callback waits: measured on the
2-core machine with 1,000 loops of a 1-s model, an acknowledgement reached the loop ~18 ms
after it was produced and its awaiting loop ran ~20-30 ms after that (bench/RESULTS.md,
session 10). The timer is cheap (a handful of callbacks per second) and says nothing
while the loop is idle but ~0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEFAULT_INTERVAL_S = 0.1


class LoopLagProbe:
    """Reports each timer's lateness (seconds) to ``observe``, from start() to stop()."""

    def __init__(self, observe: Callable[[float], None], interval: float = DEFAULT_INTERVAL_S) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval} s")
        self._observe = observe
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval
        self._timer = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        self._observe(max(0.0, self._loop.time() - self._due))
        self._arm()
