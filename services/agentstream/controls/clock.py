"""Time as the controls see it: a monotonic ``now`` and an awaitable ``sleep``.

The breaker's cool-down, the rate limiter's refill and the retry back-off all depend on
time. Taking a clock instead of calling ``time``/``asyncio`` directly lets tests replay
minutes of traffic in microseconds with ``ManualClock`` and no real sleeps.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds (only differences mean anything) and a way to wait."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to, or when someone sleeps on it.

    ``sleep`` advances the time at once and yields to the event loop, so code that waits
    on it behaves as if the time had passed; ``slept`` records every wait for assertions.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"A clock cannot go back; got advance({seconds}).")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        self._now += seconds
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would
