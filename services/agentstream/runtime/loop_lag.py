"""How late a worker's event loop runs what is due: a timer every ``interval`` seconds,
and the time between when it was due and when it ran.

A callback made ready (a delivery acknowledgement settled, a model reply, a timer) runs
after every callback ahead of it in the loop's queue; with hundreds of agent loops in one
worker that queue fills in bursts. The lag is what such a callback waits: on the 2-core
machine with 1,000 loops of a 1-s model, a delivery report reached Python 17-23 ms after
its record was produced, and the loop settled it another ~15-30 ms later (bench/RESULTS.md,
session 10). The timer is cheap (ten callbacks a second) and reads ~0 while the loop is idle.

One sample per timer: a stall of L seconds gives one sample of about L, not one per
``interval`` it covered, so the quantiles are those of the samples, and long stalls weigh
less in them than in what a callback made ready at a random moment waits.
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
        if self._timer is not None:
            raise RuntimeError("the loop lag probe is running already; stop() it before starting it again")
        self._loop = loop
        self._arm()

    @property
    def running(self) -> bool:
        return self._timer is not None

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
        lag = max(0.0, self._loop.time() - self._due)
        self._arm()  # before observing: an observer that raises does not stop the probe
        self._observe(lag)
