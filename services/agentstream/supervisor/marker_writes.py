"""Group commit of the supervisor's result markers (supervisor/emitter.py): the markers a
partition's emissions ask to write while that partition's previous write is out go
together in the next one, one Processor.persist_all (one broker round trip, one RocksDB
batch), instead of one round trip each.

Every write still returns only once its own marker is acknowledged and stored, so what
its caller does next (send the result, let the source offset be committed) waits exactly
as it did: the markers and their order per task do not change, only how many share a
round trip. At most one write per partition is out at a time, and a batch is produced in
the order its markers were asked (one changelog partition, an idempotent producer), so a
task's later marker never lands before its earlier one.

A batch the broker refuses is written again one marker at a time: a refused marker (one
too big for the changelog, say) fails its own emission only, as a lone write did, and a
marker that had landed is merely written twice (the same value: harmless).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentstream.runtime import Table
from agentstream.runtime.store import PartitionStore

Items = list[tuple[str, Any]]
Outcomes = list[BaseException | None]  # one per marker of a batch: None when it is stored


class Persister(Protocol):
    async def persist(self, table: Table, key: str, value: Any, *, partition: int) -> None: ...

    async def persist_all(self, table: Table, items: Items, *, partition: int) -> None: ...


class PartitionGone(Exception):
    """A batch's partition left this worker before the batch was written."""


@dataclass
class _Batch:
    store: PartitionStore  # the partition's store when the batch opened
    items: Items = field(default_factory=list)
    written: asyncio.Task[Outcomes] | None = None


class MarkerWrites:
    """Write-through writes of one table's markers, batched per partition."""

    def __init__(self, app: Persister, table: Table) -> None:
        self.app = app
        self.table = table
        self._open: dict[int, _Batch] = {}  # partition -> the batch still taking markers
        self._last: dict[int, asyncio.Task[Outcomes]] = {}  # partition -> its latest batch's write

    async def write(self, key: str, value: Any, *, partition: int) -> None:
        """Persist ``key → value`` in ``partition``; return once it is acknowledged and
        stored, or raise what refused it."""
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = _Batch(self.table.partition(partition))
            batch.written = asyncio.get_running_loop().create_task(self._write(partition, batch, self._last.get(partition)))
            self._last[partition] = batch.written
        index = len(batch.items)
        batch.items.append((key, value))
        assert batch.written is not None
        # Shielded: a cancelled writer (its partition revoked) must not cancel the others' markers.
        error = (await asyncio.shield(batch.written))[index]
        if error is not None:
            raise error

    async def _write(self, partition: int, batch: _Batch, previous: asyncio.Task[Outcomes] | None) -> Outcomes:
        """Once ``previous`` (the partition's write before) is done, close ``batch`` and
        write it; the outcome of each of its markers (never raises but for a cancel)."""
        if previous is not None:
            await asyncio.wait([previous])  # its outcomes are its writers'
        if self._open.get(partition) is batch:
            del self._open[partition]  # markers asked from now on go in the next batch
        if self.table.stores.get(partition) is not batch.store:
            gone = PartitionGone(f"partition {partition} of {self.table.name!r} was revoked before its markers were "
                                 "written; its next owner recovers the tasks")
            return [gone] * len(batch.items)
        try:
            await self.app.persist_all(self.table, batch.items, partition=partition)
            return [None] * len(batch.items)
        except Exception as exc:
            if len(batch.items) == 1:
                return [exc]
        return [await self._write_one(key, value, partition) for key, value in batch.items]

    async def _write_one(self, key: str, value: Any, partition: int) -> BaseException | None:
        try:
            await self.app.persist(self.table, key, value, partition=partition)
        except Exception as exc:
            return exc
        return None
