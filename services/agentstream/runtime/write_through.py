"""Write-through: a processor's writes that the writer waits for until the broker has them.

A table's write-through record goes to the table's changelog and reaches the partition's
RocksDB store as its acknowledgement is settled (``_store_landed``, run from
runtime/delivery.py: a partition's writes reach its store in the order of their offsets, not
in the order their writers wake). ``send_acked`` is the same wait for a record of any topic.
Each wait is timed into agentstream_acked_write_seconds, but for an expiry pass's writes.

For state that must survive a kill -9 at once (step checkpoints, supervisor markers); do
not mix with buffered writes (runtime/table.py) on one table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import Producer

from agentstream.runtime.context import current_context
from agentstream.runtime.delivery import produce_acked, produce_all_acked
from agentstream.runtime.store import PartitionStore
from agentstream.runtime.table import Table
from agentstream.telemetry import tracing

_T = TypeVar("_T")
Observe = Callable[[float], None]


def _store_landed(
    table: Table, partition: int, store: PartitionStore, records: list[tuple[bytes, bytes | None]], offset: int,
) -> None:
    """Store a write-through write the changelog has acknowledged up to ``offset``. Run as
    its delivery report is settled (runtime/delivery.py), so a partition's writes reach
    its store in the order of their offsets (but for the cases delivery.py names), not in
    the order their writers wake."""
    if table.stores.get(partition) is store:  # still ours: not revoked while the write was on its way
        store.put_all_durable(records, offset)


class WriteThrough:
    """The acknowledged writes of one processor, on the producer ``producer()`` returns (it
    raises while the processor is not running); each one's wait goes to ``observe``."""

    def __init__(self, producer: Callable[[], Producer], observe: Observe) -> None:
        self._producer = producer
        self._observe = observe

    async def persist(self, table: Table, key: str | bytes, value: Any, *, partition: int | None = None) -> None:
        """Send ``key → value`` (None deletes) to the table's changelog and wait until the
        broker acknowledges it; it is stored as its acknowledgement is settled.
        ``partition`` defaults to the partition of the record being handled."""
        await self._persist(table, key, value, partition, self._observe)

    async def persist_expired(self, table: Table, key: str | bytes, value: Any, *, partition: int | None = None) -> None:
        """persist() of an expiry pass's writes, left out of agentstream_acked_write_seconds:
        a pass writes up to a thousand at once per partition, which would outweigh the
        writes the worker's tasks wait for."""
        await self._persist(table, key, value, partition, None)

    async def _persist(
        self, table: Table, key: str | bytes, value: Any, partition: int | None, observe: Observe | None,
    ) -> None:
        partition = current_context.get().partition if partition is None else partition
        records = [(table.encode_key(key), None if value is None else table.encode_value(value))]
        landed = partial(_store_landed, table, partition, table.partition(partition), records)
        # Not send_acked: a changelog record is state, not a message of the task's trace.
        await _acknowledged(produce_acked(self._producer(), table.changelog_topic, records[0][1],
                                          records[0][0], partition, landed=landed), observe)

    async def persist_all(self, table: Table, items: list[tuple[str | bytes, Any]], *, partition: int) -> None:
        """persist() of several keys of one partition at once: produced in this order (they
        land in it: one partition, an idempotent producer), acknowledged together, then
        stored in one batch. A kill -9 in between leaves a prefix of them in the changelog."""
        if not items:
            return
        records = [(table.encode_key(key), None if value is None else table.encode_value(value)) for key, value in items]
        landed = partial(_store_landed, table, partition, table.partition(partition), records)
        await _acknowledged(produce_all_acked(self._producer(), table.changelog_topic,
                                              [(value, key) for key, value in records], partition, landed=landed),
                            self._observe)

    async def send_acked(
        self, topic: str, value: bytes | None, key: str | bytes | None, *, partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> int:
        """Send one record and wait until the broker acknowledges it; return its offset."""
        if not tracing.enabled():
            return await _acknowledged(produce_acked(self._producer(), topic, value, key, partition, headers), self._observe)
        with tracing.producing(topic, partition, headers) as traced:  # PRODUCER span, traceparent header
            offset = await _acknowledged(
                produce_acked(self._producer(), topic, value, key, partition, traced.headers), self._observe)
            traced.landed(offset)
        return offset


async def _acknowledged(acked: Awaitable[_T], observe: Observe | None) -> _T:
    """``acked`` (a produce awaiting its acknowledgement); its time to ``observe`` once
    acknowledged (a refused or cancelled write is not a time it took to land)."""
    if observe is None:
        return await acked
    started = time.perf_counter()
    landed = await acked
    observe(time.perf_counter() - started)
    return landed
