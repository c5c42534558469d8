"""Deadlines of requests that wait for a human, as one event-loop timer per partition, due
at the earliest deadline armed for it: the waiting records themselves (in a table) are
the durable timers, and the owner of their partition re-arms this one from them after
every assignment. When it fires, the owner reads the partition's records, applies every
deadline past and arms the next. No timer per waiting request: one would keep the
context of the message that armed it alive until its deadline.

Used by the supervisor's escalations (supervisor/escalator.py) and a specialist's approvals
(specialist/waiting.py).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

from agentstream.events import now_ms


class PartitionDeadlines:
    """Calls ``due(partition)`` once the earliest deadline armed for the partition has passed."""

    def __init__(self, due: Callable[[int], None], tick_ms: int = 1000) -> None:
        self._due = due
        self._tick_ms = tick_ms  # deadlines are rounded up to it, so ones close together share a firing
        self._timers: dict[int, tuple[int, asyncio.TimerHandle]] = {}  # partition -> (due ms, its timer)

    def arm(self, deadline: int, partition: int) -> None:
        """Have the partition's timer fire by ``deadline`` (epoch ms)."""
        due = -(-deadline // self._tick_ms) * self._tick_ms
        armed = self._timers.get(partition)
        if armed is not None and armed[0] <= due:
            return
        if armed is not None:
            armed[1].cancel()
        delay_s = max(0.0, (due - now_ms()) / 1000)
        # An empty context: the message handled now (its record, log fields, trace) would
        # otherwise stay in memory as long as the timer does.
        handle = asyncio.get_running_loop().call_later(delay_s, self._fire, partition, context=contextvars.Context())
        self._timers[partition] = (due, handle)

    def due_at(self, partition: int) -> int | None:
        """When the partition's timer fires (epoch ms, rounded up to the tick); None: not armed."""
        armed = self._timers.get(partition)
        return None if armed is None else armed[0]

    def _fire(self, partition: int) -> None:
        self._timers.pop(partition, None)
        self._due(partition)
