"""The processor's expiry passes: every table's Expiry (runtime/expiry.py) applied to the
partitions this worker owns, a bounded walk at a time, each table on its own schedule.

Each table is walked again ``retention / 10`` after its walk reached the end of its keys,
and ``resume_s`` after a pass that stopped at its bound (more keys wait). The schedules
are apart because the tables are: a dedupe table seven days deep is never walked to its
end, while the router's sessions table (up to 1,000 sessions a partition) is walked to its
end in one pass; on one schedule the sessions (each record a session's memory, decoded to
judge it) were read again every ``resume_s`` for as long as the dedupe walk went on, which
on a busy worker is always. The schedule is per table, not per partition: while one
partition's walk goes on, the table's other partitions, walked to their end, are walked
again from their start at each pass (a skewed table pays that).

The deletes of a buffered table go through the checkpoint like a handler's writes; those
of a write-through table (one written with ``Processor.persist``) are persisted the same
way, acknowledged one by one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agentstream.runtime.expiry import Expiry, Stamp, WrittenAt
from agentstream.runtime.stats import ProcessorStats
from agentstream.runtime.store import PartitionStore
from agentstream.runtime.table import Table

log = logging.getLogger(__name__)

# A table's walks start every retention / 10, within these bounds (seconds).
_MIN_INTERVAL_S = 0.5
_MAX_INTERVAL_S = 60.0


class Persist(Protocol):
    def __call__(self, table: Table, key: str | bytes, value: Any, *, partition: int | None = None) -> Awaitable[None]: ...


@dataclass
class _Scheduled:
    """One table's expiry and when its next pass is due (the clock's seconds)."""

    table: Table
    expiry: Expiry
    write_through: bool
    interval: float  # between walks that reached the end of the keys
    due: float


class Retention:
    """The expiries declared on one processor's tables, and their passes."""

    def __init__(
        self, name: str, stats: ProcessorStats, persist: Persist, *, resume_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.stats = stats
        self.resume_s = resume_s  # between the passes of a walk that stopped at its bound
        self._persist = persist
        self._clock = clock
        self._scheduled: list[_Scheduled] = []

    def add(
        self, table: Table, retention_s: float, written_at: WrittenAt, *, stamp: Stamp | None, prefix: bytes,
        write_through: bool,
    ) -> Expiry:
        """Expire ``table``'s entries ``retention_s`` after ``written_at`` (see Processor.expire).
        Its first pass is due one interval from now."""
        expiry = Expiry(int(retention_s * 1000), written_at, table.decode_value, stamp=stamp, prefix=prefix)
        interval = min(_MAX_INTERVAL_S, max(_MIN_INTERVAL_S, retention_s / 10))
        self._scheduled.append(_Scheduled(table, expiry, write_through, interval, self._clock() + interval))
        return expiry

    def start(self) -> None:
        """The processor starts serving: each table's first pass is one interval away."""
        now = self._clock()
        for scheduled in self._scheduled:
            scheduled.due = now + scheduled.interval

    @property
    def next_due(self) -> float:
        """When the earliest table's pass is due (infinity without expiries)."""
        return min((scheduled.due for scheduled in self._scheduled), default=float("inf"))

    async def run_due(self, owned: set[int], stopped: Callable[[], bool]) -> None:
        """A bounded pass over every partition in ``owned`` of each table whose pass is due,
        and the table's next due time. ``stopped``: the processor failed, so nothing more
        is written."""
        now = self._clock()
        for scheduled in self._scheduled:
            if scheduled.due > now:
                continue
            more = await self._pass(scheduled, owned, stopped)
            scheduled.due = self._clock() + (self.resume_s if more else scheduled.interval)

    async def _pass(self, scheduled: _Scheduled, owned: set[int], stopped: Callable[[], bool]) -> bool:
        """One table's pass; True if a partition's walk stopped at its bound."""
        more = False
        table = scheduled.table
        for partition, store in list(table.stores.items()):
            if partition not in owned or stopped():
                continue
            sweep = scheduled.expiry.sweep(partition, store)
            more = more or sweep.full
            writes: list[tuple[bytes, Any]] = [(key, None) for key in sweep.deletes] + sweep.stamps
            if scheduled.write_through:
                await self._persist_writes(table, partition, writes)
            else:
                _buffer_writes(table, store, writes)
            self.stats.expired += len(sweep.deletes)
        return more

    def forget(self, partitions: list[int]) -> None:
        """The partitions left this worker: their next owner starts its own walks."""
        for scheduled in self._scheduled:
            for partition in partitions:
                scheduled.expiry.forget(partition)

    async def _persist_writes(self, table: Table, partition: int, writes: list[tuple[bytes, Any]]) -> None:
        # A refused write is not fatal: the entry is still old on the next pass.
        # (A handler's write of the same key between the sweep and this delete's
        # acknowledgement would be lost; the entry is a retention old, so only a
        # replay could write it, and not within these milliseconds in practice.)
        outcomes = await asyncio.gather(
            *(self._persist(table, k, v, partition=partition) for k, v in writes), return_exceptions=True
        )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            log.warning("%s: %d expiry writes to %s[%d] failed (%s); retried next pass",
                        self.name, len(failed), table.changelog_topic, partition, failed[0])


def _buffer_writes(table: Table, store: PartitionStore, writes: list[tuple[bytes, Any]]) -> None:
    for key, value in writes:
        if value is None:
            store.delete(key)
        else:
            store.put_value(key, value, table.encode_value)
