"""The processor's expiry passes: every table's Expiry (runtime/expiry.py) applied to the
partitions this worker owns, a bounded walk at a time, each table and partition on its own
schedule.

A partition's walk starts again ``interval`` (retention / 10, between 0.5 and 60 s) after
it reached the end of its keys. A walk that stopped at its bound (more keys wait) goes on
``interval`` later too, or sooner when at that pace a key would wait longer than the
retention's tenth between two visits (a walk plus an interval); at ``resume_s`` (the
commit interval) while its length is unknown (its first walk, or one longer than the
last), and when the tenth leaves no time beyond the interval (retentions up to 600 s). So
an expired entry is deleted within about a tenth of its retention, and a deep table is
not read faster than that needs: a router's seven-day dedupe table of 30,000 marks a
partition was walked in 30 passes a second apart and again a minute after each walk
(~330 keys a second on average), and is now read at 1,000 keys a minute once its first
walk has ended; six million marks a partition (ten tasks a second for seven days) get a
pass every 10 s.

The schedules are apart because the tables and partitions are: the router's sessions
table (a record per session, its memory decoded to judge it) is walked to its end in one
pass, once per interval, whatever the dedupe walk does; a skewed table's small partitions
are not walked again each time its big one goes on.

The deletes of a buffered table go through the checkpoint like a handler's writes; those
of a write-through table (one written with ``Processor.persist``) are persisted the same
way, acknowledged one by one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
    """One table's expiry and when its partitions' next passes are due (the clock's seconds)."""

    table: Table
    expiry: Expiry
    write_through: bool
    interval: float  # between walks; also between the passes of a walk, unless that is too slow
    budget: float  # a key is visited again within this (retention / 10, uncapped): a walk plus an interval
    due: float  # the table's earliest partition (or, with none scheduled, the table's next pass)
    partition_due: dict[int, float] = field(default_factory=dict)
    passes: dict[int, int] = field(default_factory=dict)  # partition -> passes of its walk so far
    walk_passes: dict[int, int] = field(default_factory=dict)  # partition -> passes its last whole walk took

    def after(self, partition: int, stopped_at_bound: bool, resume_s: float) -> float:
        """Seconds from one of the partition's passes to its next (and count the pass).
        A key is visited again a walk plus an interval later: the walk gets what the
        budget leaves after the interval."""
        walked = self.passes[partition] = self.passes.get(partition, 0) + 1
        if not stopped_at_bound:
            self.walk_passes[partition] = self.passes.pop(partition)
            return self.interval
        known = self.walk_passes.get(partition)
        walk_budget = self.budget - self.interval
        if known is None or walked >= known or walk_budget <= 0:
            return resume_s  # its length unknown (or outgrown), or no time to spare: the commit pace
        return max(resume_s, min(self.interval, walk_budget / known))

    def forget(self, partition: int) -> None:
        for schedule in (self.partition_due, self.passes, self.walk_passes):
            schedule.pop(partition, None)


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
        budget = max(interval, retention_s / 10)
        self._scheduled.append(_Scheduled(table, expiry, write_through, interval, budget, self._clock() + interval))
        return expiry

    def start(self) -> None:
        """The processor starts serving: each table's first pass is one interval away."""
        now = self._clock()
        for scheduled in self._scheduled:
            scheduled.due = now + scheduled.interval
            scheduled.partition_due.clear()

    @property
    def next_due(self) -> float:
        """When the earliest table's pass is due (infinity without expiries)."""
        return min((scheduled.due for scheduled in self._scheduled), default=float("inf"))

    async def run_due(self, owned: set[int], stopped: Callable[[], bool]) -> None:
        """A bounded pass over each partition in ``owned`` whose pass is due, of each table
        whose earliest partition is due. A partition new to a table's schedule (just
        assigned) is walked at the table's next pass. ``stopped``: the processor failed,
        so nothing more is written."""
        now = self._clock()
        for scheduled in self._scheduled:
            if scheduled.due > now:
                continue
            await self._pass(scheduled, owned, stopped, now)
            after = self._clock()
            dues = [due for partition, due in scheduled.partition_due.items() if partition in owned]
            scheduled.due = min(dues, default=after + scheduled.interval)

    async def _pass(self, scheduled: _Scheduled, owned: set[int], stopped: Callable[[], bool], now: float) -> None:
        """One table's pass over its due partitions; each one's next pass scheduled."""
        table = scheduled.table
        for partition, store in list(table.stores.items()):
            if partition not in owned or stopped() or scheduled.partition_due.get(partition, now) > now:
                continue
            sweep = scheduled.expiry.sweep(partition, store)
            writes: list[tuple[bytes, Any]] = [(key, None) for key in sweep.deletes] + sweep.stamps
            if scheduled.write_through:
                await self._persist_writes(table, partition, writes)
            else:
                _buffer_writes(table, store, writes)
            self.stats.expired += len(sweep.deletes)
            scheduled.partition_due[partition] = self._clock() + scheduled.after(partition, sweep.full, self.resume_s)

    def forget(self, partitions: list[int]) -> None:
        """The partitions left this worker: their next owner starts its own walks."""
        for scheduled in self._scheduled:
            for partition in partitions:
                scheduled.expiry.forget(partition)
                scheduled.forget(partition)

    async def _persist_writes(self, table: Table, partition: int, writes: list[tuple[bytes, Any]]) -> None:
        # A refused write is not fatal: the entry is still old on the next walk.
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
