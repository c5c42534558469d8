"""A retry tier's partition held at a record not due yet stays held until the poll thread
has rewound and resumed it (runtime/hold.py).

Its release timer may fire while the batch that held it is still being handled (a batch
lasts as long as its waits for a slot). Released at once, the batch's later records of the
partition were handled, past the held one, and the rewind then fetched the held record and
the ones behind it as already seen: they were never handled."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confluent_kafka import TopicPartition

from agentstream.clients import CONSUMER_PROTOCOL
from agentstream.runtime import MessageContext
from agentstream.runtime.offsets import PartitionOffsets
from agentstream.runtime.processor import Processor
from tests.unit.fetched import FetchedRecord

TOPIC = "tasks.retry.1"
DUE = "x-due-ms"
COMMITTED = 10  # the group's committed offset of each partition given (the held record's)


def _due_at(offset: int, due_ms: int) -> FetchedRecord:
    """A fetched record of the retry tier, due at ``due_ms``."""
    return FetchedRecord(TOPIC, offset, value=str(offset).encode(), headers=[(DUE, str(due_ms).encode())],
                         timestamp_ms=due_ms)


class _Consumer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def pause(self, partitions: list[Any]) -> None:
        self.calls.append(("pause", [(p.topic, p.partition) for p in partitions]))

    def seek(self, partition: Any) -> None:
        self.calls.append(("seek", partition.offset))

    def resume(self, partitions: list[Any]) -> None:
        self.calls.append(("resume", [(p.topic, p.partition) for p in partitions]))

    def committed(self, partitions: list[Any], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, COMMITTED) for p in partitions]  # runtime/fetch_start.py

    def assign(self, partitions: list[Any]) -> None:
        self.calls.append(("assign", [(p.topic, p.partition, p.offset) for p in partitions]))

    def incremental_assign(self, partitions: list[Any]) -> None:
        self.calls.append(("incremental_assign", [(p.topic, p.partition, p.offset) for p in partitions]))


def test_a_held_partition_stays_held_through_its_batch_until_the_poll_thread_rewinds_it() -> None:
    processor = Processor("holds", "localhost:9", "holds", "unused-state-dir")  # no I/O until run()
    handled: list[int] = []

    @processor.handler(TOPIC, decode=lambda value: int(value), due_header=DUE)
    async def on_retry(value: int, ctx: MessageContext) -> None:
        handled.append(value)

    processor._offsets[(TOPIC, 0)] = PartitionOffsets()
    consumer = _Consumer()

    async def batch() -> None:
        processor._loop = asyncio.get_running_loop()
        now_ms = int(time.time() * 1000)
        await processor._handle(_due_at(10, now_ms + 50))  # not due: the partition is held at 10
        await processor._handle(_due_at(11, now_ms + 50))  # behind it
        deadline = time.monotonic() + 5
        while len(processor._consumer_calls) < 2:  # its release timer fires while the batch goes on
            assert time.monotonic() < deadline, "the hold's release timer did not fire"
            await asyncio.sleep(0.005)
        await processor._handle(_due_at(12, now_ms - 1))  # due, but fetched behind the held record

    asyncio.run(batch())
    tracker = processor._offsets[(TOPIC, 0)]
    assert handled == [] and not tracker.already_seen(10), "a record behind the held one was handled"
    processor._consumer_calls.run(consumer)  # the poll thread, before its next poll
    assert consumer.calls == [("pause", [(TOPIC, 0)]), ("seek", 10), ("resume", [(TOPIC, 0)])]
    assert not processor._holds_due.is_held((TOPIC, 0))  # the records from 10 on are fetched again


def _held_at_10(monkeypatch: Any) -> tuple[Processor, _Consumer]:
    """A processor whose partition 0 is held at offset 10 (due in a minute), the hold's pause
    and rewind made; its assignment callback restores nothing (not these tests' concern)."""
    processor = Processor("holds", "localhost:9", "holds", "unused-state-dir")

    @processor.handler(TOPIC, decode=lambda value: int(value), due_header=DUE)
    async def on_retry(value: int, ctx: MessageContext) -> None:
        raise AssertionError("not due: never handled")

    processor._offsets[(TOPIC, 0)] = PartitionOffsets()
    consumer = _Consumer()

    async def hold() -> None:
        processor._loop = asyncio.get_running_loop()
        await processor._handle(_due_at(10, int(time.time() * 1000) + 60_000))

    asyncio.run(hold())
    processor._consumer_calls.run(consumer)
    monkeypatch.setattr(processor, "_on_loop", lambda coro: coro.close())
    return processor, consumer


def test_a_partition_given_back_after_its_revoke_is_resumed(monkeypatch: Any) -> None:
    # librdkafka keeps an application pause across a revoke and a later assignment of the
    # partition to the same member (seen on Kafka 4.1): resumed only here, a partition
    # revoked while held would never be fetched again (tests/integration/test_retry_rebalance.py).
    processor, consumer = _held_at_10(monkeypatch)
    processor._holds_due.forget((TOPIC, 0))  # revoked while held (Processor._revoked)
    processor._assign_callback(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert consumer.calls == [("pause", [(TOPIC, 0)]), ("seek", 10), ("resume", [(TOPIC, 0)]),
                              ("assign", [(TOPIC, 0, COMMITTED)])]


def test_a_partition_held_through_an_incremental_assignment_stays_paused(monkeypatch: Any) -> None:
    # KIP-848 gives a member only what changes: a partition it keeps, held, is not named, and
    # resuming it would fetch its not-yet-due record early.
    processor, consumer = _held_at_10(monkeypatch)
    processor._protocol = CONSUMER_PROTOCOL
    processor._assign_callback(consumer, [TopicPartition(TOPIC, 1)])  # type: ignore[arg-type]
    assert consumer.calls == [("pause", [(TOPIC, 0)]), ("seek", 10), ("resume", [(TOPIC, 1)]),
                              ("incremental_assign", [(TOPIC, 1, COMMITTED)])]
    assert processor._holds_due.is_held((TOPIC, 0))
