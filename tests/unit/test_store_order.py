"""A partition's write-through writes reach its store in the order of their changelog
offsets (runtime/write_through.py ``_store_landed``), whatever order their writers wake in.

A store records the highest offset it holds. When a later write was stored first (a
``persist`` awaits its report directly; a ``persist_all`` through ``gather``, an event-loop
iteration later), a kill -9 before the earlier one was stored left the store at the later
offset without it, and a start on that state never restored it: a run's done marker and
tombstones, say, with the run then resumed as if it had never ended."""

from __future__ import annotations

import asyncio
from typing import Any

from agentstream.runtime.processor import Processor

from .test_delivery import _Producer, _until


class _Store:
    """Records what reaches it, as (keys, recorded offset)."""

    def __init__(self) -> None:
        self.puts: list[tuple[list[bytes], int]] = []

    def put_all_durable(self, records: list[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        self.puts.append(([key for key, _ in records], changelog_offset))

    def put_durable(self, key: bytes, value: bytes | None, changelog_offset: int) -> None:
        self.put_all_durable([(key, value)], changelog_offset)


class _Table:
    changelog_topic = "billing.checkpoints.changelog"

    def __init__(self, store: _Store) -> None:
        self.stores = {0: store}

    def partition(self, partition: int) -> _Store:
        return self.stores[partition]

    @staticmethod
    def encode_key(key: str | bytes) -> bytes:
        return key.encode() if isinstance(key, str) else key

    @staticmethod
    def encode_value(value: Any) -> bytes:
        return str(value).encode()


def _processor(producer: _Producer) -> Processor:
    processor = Processor("order", "localhost:9", "order", "unused-state-dir")  # no I/O until run()
    processor._producer = producer  # type: ignore[assignment]
    return processor


def test_a_partitions_writes_reach_its_store_in_offset_order_whatever_order_their_writers_wake() -> None:
    producer, store = _Producer(), _Store()
    processor, table = _processor(producer), _Table(store)

    async def scenario() -> None:
        end = asyncio.ensure_future(processor.persist_all(
            table, [("d/run-a", 1), ("s/run-a/1", None), ("h/run-a", None)], partition=0))  # type: ignore[arg-type]
        step = asyncio.ensure_future(processor.persist(table, "s/run-b/1", "step", partition=0))  # type: ignore[arg-type]
        await _until(lambda: len(producer.callbacks) >= 4)
        producer.acknowledge(failing=set())  # one batch of reports: offsets 0-2 (the end), 3 (the step)
        await asyncio.gather(end, step)

    asyncio.run(scenario())
    assert store.puts == [([b"d/run-a", b"s/run-a/1", b"h/run-a"], 2), ([b"s/run-b/1"], 3)]


def test_a_write_to_a_partition_revoked_meanwhile_is_not_stored() -> None:
    producer, store = _Producer(), _Store()
    processor, table = _processor(producer), _Table(store)

    async def scenario() -> None:
        write = asyncio.ensure_future(processor.persist(table, "s/run-c/1", "step", partition=0))  # type: ignore[arg-type]
        await _until(lambda: bool(producer.callbacks))
        table.stores[0] = _Store()  # revoked and assigned again: another store now
        producer.acknowledge(failing=set())
        await write

    asyncio.run(scenario())
    assert store.puts == []


def test_a_write_retried_on_a_full_queue_keeps_its_records_together() -> None:
    # The end write's second record meets a full queue; a step of another run, written
    # meanwhile, must not take an offset between the two.
    producer, store = _Producer(full_at=frozenset({1})), _Store()
    processor, table = _processor(producer), _Table(store)

    async def scenario() -> None:
        end = asyncio.ensure_future(processor.persist_all(
            table, [("d/run-a", 1), ("h/run-a", None)], partition=0))  # type: ignore[arg-type]
        step = asyncio.ensure_future(processor.persist(table, "s/run-b/1", "step", partition=0))  # type: ignore[arg-type]
        await _until(lambda: len(producer.callbacks) >= 3)  # the refused record is produced again after the retry's pause
        producer.acknowledge(failing=set())
        await asyncio.gather(end, step)

    asyncio.run(scenario())
    assert store.puts == [([b"d/run-a", b"h/run-a"], 1), ([b"s/run-b/1"], 2)]


class _Queue:
    """A producer's queue of records waiting for their reports, which nothing serves."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting

    def __len__(self) -> int:
        return self.waiting

    def poll(self, timeout: float) -> int:
        raise AssertionError("a checkpoint waits for the pump to serve reports; it serves none itself")

    def flush(self, timeout: float) -> int:
        raise AssertionError("flush() serves reports on the caller's thread, beside the pump")


def test_a_checkpoint_gives_up_after_the_flush_timeout_with_the_count_left() -> None:
    queue = _Queue(waiting=3)
    processor = _processor(queue)  # type: ignore[arg-type]
    processor._checkpoints.flush_timeout = 0.2  # no pump runs: nothing is ever served
    assert processor._checkpoints.wait_delivered(queue) == 3  # type: ignore[arg-type]
