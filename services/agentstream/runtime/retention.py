"""The processor's expiry pass: every table's Expiry (runtime/expiry.py) applied to the
partitions this worker owns, a bounded walk at a time.

The deletes of a buffered table go through the checkpoint like a handler's writes; those
of a write-through table (one written with ``Processor.persist``) are persisted the same
way, acknowledged one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agentstream.runtime.expiry import Expiry, Stamp, WrittenAt
from agentstream.runtime.stats import ProcessorStats
from agentstream.runtime.store import PartitionStore
from agentstream.runtime.table import Table

log = logging.getLogger(__name__)

# Passes come every retention / 10, within these bounds (seconds).
_MIN_INTERVAL_S = 0.5
_MAX_INTERVAL_S = 60.0


class Persist(Protocol):
    def __call__(self, table: Table, key: str | bytes, value: Any, *, partition: int | None = None) -> Awaitable[None]: ...


class Retention:
    """The expiries declared on one processor's tables, and the pass over them."""

    def __init__(self, name: str, stats: ProcessorStats, persist: Persist) -> None:
        self.name = name
        self.stats = stats
        self._persist = persist
        self._expiries: list[tuple[Table, Expiry, bool]] = []  # (table, expiry, write-through)
        self.interval = _MAX_INTERVAL_S

    def __bool__(self) -> bool:
        return bool(self._expiries)

    def add(
        self, table: Table, retention_s: float, written_at: WrittenAt, *, stamp: Stamp | None, prefix: bytes,
        write_through: bool,
    ) -> Expiry:
        """Expire ``table``'s entries ``retention_s`` after ``written_at`` (see Processor.expire)."""
        expiry = Expiry(int(retention_s * 1000), written_at, table.decode_value, stamp=stamp, prefix=prefix)
        self._expiries.append((table, expiry, write_through))
        self.interval = min(self.interval, max(_MIN_INTERVAL_S, retention_s / 10))
        return expiry

    async def run_pass(self, owned: set[int], stopped: Callable[[], bool]) -> bool:
        """One bounded expiry pass over every partition in ``owned``; True if keys remain
        to walk. ``stopped``: the processor failed, so nothing more is written."""
        more = False
        for table, expiry, write_through in self._expiries:
            for partition, store in list(table.stores.items()):
                if partition not in owned or stopped():
                    continue
                sweep = expiry.sweep(partition, store)
                more = more or sweep.full
                writes: list[tuple[bytes, Any]] = [(key, None) for key in sweep.deletes] + sweep.stamps
                if write_through:
                    await self._persist_writes(table, partition, writes)
                else:
                    _buffer_writes(table, store, writes)
                self.stats.expired += len(sweep.deletes)
        return more

    def forget(self, partitions: list[int]) -> None:
        """The partitions left this worker: their next owner starts its own walks."""
        for _, expiry, _ in self._expiries:
            for partition in partitions:
                expiry.forget(partition)

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
