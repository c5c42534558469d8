"""Delivery reports reach the awaiting coroutines in batches (runtime/delivery.py); a refused
write carries the broker's error, retriable when waiting may help."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError

from agentstream.retry.classify import ErrorClass, classify
from agentstream.runtime import delivery
from agentstream.runtime.delivery import not_acknowledged, produce_acked, produce_all_acked
from agentstream.runtime.errors import CheckpointError
from agentstream.specialist.loop import StepNotRecorded


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Let the loop run until ``condition`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {condition}")
        await asyncio.sleep(0.001)


class _Record:
    """What librdkafka hands a delivery callback."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


class _Producer:
    """Keeps each produce's callback; ``acknowledge`` fires them all from another thread,
    as a thread serving them does, the n-th record landing at offset n (or failing)."""

    def __init__(self, full_at: frozenset[int] = frozenset()) -> None:
        self.callbacks: list[tuple[str, int, Callable[[Any, _Record], None]]] = []
        self.full_at = full_at  # the produce calls (counted from 0) refused with a full queue
        self.calls = 0

    def produce(self, topic: str, value: bytes | None, key: object, partition: int, on_delivery: Any,
                headers: object = None) -> None:
        self.calls += 1
        if self.calls - 1 in self.full_at:
            raise BufferError("Local: Queue full")
        self.callbacks.append((topic, partition, on_delivery))

    def acknowledge(self, failing: set[int], only: list[int] | None = None) -> None:
        """Report every record (or those of ``only``, in that order)."""
        def serve() -> None:
            for n in range(len(self.callbacks)) if only is None else only:
                topic, partition, callback = self.callbacks[n]
                callback(KafkaError(KafkaError._TRANSPORT, "broker down") if n in failing else None, _Record(topic, partition, n))

        thread = threading.Thread(target=serve)
        thread.start()
        thread.join()


def test_every_report_of_a_batch_settles_its_own_write() -> None:
    producer = _Producer()

    async def scenario() -> list[object]:
        writes = [asyncio.ensure_future(produce_acked(producer, "t", b"v", b"k", n % 3)) for n in range(200)]  # type: ignore[arg-type]
        await _until(lambda: len(producer.callbacks) >= len(writes))  # every write reached produce()
        producer.acknowledge(failing={7})
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert outcomes[:7] == list(range(7)) and outcomes[8:] == list(range(8, 200))
    assert isinstance(outcomes[7], CheckpointError) and "t[1]" in str(outcomes[7])


def test_reports_after_a_settled_batch_wake_the_loop_again() -> None:
    producer = _Producer()

    async def scenario() -> tuple[int, int]:
        first = asyncio.ensure_future(produce_acked(producer, "t", b"v", b"k", 0))  # type: ignore[arg-type]
        await _until(lambda: bool(producer.callbacks))
        producer.acknowledge(failing=set())
        landed = await first
        producer.callbacks.clear()
        second = asyncio.ensure_future(produce_acked(producer, "t", b"v", b"k", 0))  # type: ignore[arg-type]
        await _until(lambda: bool(producer.callbacks))
        producer.acknowledge(failing=set())
        return landed, await asyncio.wait_for(second, 5)

    assert asyncio.run(scenario()) == (0, 0)


def test_reports_served_on_the_loops_own_thread_settle_at_once_in_their_order() -> None:
    # A worker's pump serves reports on the loop's thread (runtime/delivery_pump.py).
    producer = _Producer()
    stored: list[int] = []

    async def scenario() -> tuple[list[int], list[int]]:
        writes = [asyncio.ensure_future(produce_acked(producer, "t", b"v", b"k", 0, landed=stored.append))  # type: ignore[arg-type]
                  for _ in range(3)]
        await _until(lambda: len(producer.callbacks) == 3)
        for n, (topic, partition, callback) in enumerate(producer.callbacks):
            callback(None, _Record(topic, partition, n))  # as poll(0) on this thread runs them
        settled = list(stored)  # the hooks ran in the callbacks, before the loop turned once more
        return settled, await asyncio.gather(*writes)

    assert asyncio.run(scenario()) == ([0, 1, 2], [0, 1, 2])


def test_a_report_served_on_its_thread_after_the_loop_closed_is_dropped() -> None:
    # A flush on the thread whose loop has ended (an embedding app's shutdown): the writer
    # is gone, and settling it would ask the closed loop to run its callbacks.
    producer = _Producer()
    stored: list[int] = []
    loop = asyncio.new_event_loop()
    write = loop.create_task(produce_acked(producer, "t", b"v", b"k", 0, landed=stored.append))  # type: ignore[arg-type]
    loop.run_until_complete(_until(lambda: len(producer.callbacks) == 1))
    loop.close()  # the write still awaits its report
    topic, partition, callback = producer.callbacks[0]
    callback(None, _Record(topic, partition, 0))  # raised RuntimeError('Event loop is closed') before
    assert stored == [] and not write.done()


def test_each_event_loop_gets_its_own_reports() -> None:
    # Tests run several loops in one process, one after another; each settles its own.
    for _ in range(2):
        test_reports_after_a_settled_batch_wake_the_loop_again()


def test_records_produced_together_are_all_acknowledged_or_the_write_fails() -> None:
    async def scenario(failing: set[int]) -> list[int]:
        producer = _Producer()
        records: list[tuple[bytes | None, bytes | None]] = [(None, f"s/{n}".encode()) for n in range(5)]
        write = asyncio.ensure_future(produce_all_acked(producer, "c", records, 2))  # type: ignore[arg-type]
        await _until(lambda: len(producer.callbacks) >= len(records))
        assert [partition for _, partition, _ in producer.callbacks] == [2] * len(records)
        producer.acknowledge(failing)
        return await write

    assert asyncio.run(scenario(set())) == [0, 1, 2, 3, 4]
    with pytest.raises(CheckpointError, match=r"c\[2\]"):
        asyncio.run(scenario({3}))


def test_a_closed_loop_and_its_delivery_state_are_freed() -> None:
    loop = asyncio.new_event_loop()
    delivery._deliveries(loop)
    collected = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert collected() is None, "the per-loop delivery state kept its loop alive"


def test_a_landed_hook_runs_as_its_report_is_settled_before_the_writer_wakes() -> None:
    producer = _Producer()
    seen: list[tuple[int, bool]] = []

    async def scenario() -> int:
        woken = False

        async def writer() -> int:
            nonlocal woken
            offset = await produce_acked(producer, "t", b"v", b"k", 0,  # type: ignore[arg-type]
                                         landed=lambda at: seen.append((at, woken)))
            woken = True
            return offset

        write = asyncio.ensure_future(writer())
        await _until(lambda: bool(producer.callbacks))
        producer.acknowledge(failing=set())
        return await write

    assert asyncio.run(scenario()) == 0
    assert seen == [(0, False)]


async def _three_records_produced(producer: _Producer, landed: list[int]) -> asyncio.Future[list[int]]:
    """A write of three records to partition 0 whose hook appends to ``landed``, produced."""
    records: list[tuple[bytes | None, bytes | None]] = [(b"v", f"s/{n}".encode()) for n in range(3)]
    write = asyncio.ensure_future(produce_all_acked(producer, "c", records, 0, landed=landed.append))  # type: ignore[arg-type]
    await _until(lambda: len(producer.callbacks) >= len(records))
    return write


def test_a_writes_hook_runs_once_with_its_last_offset_only_if_every_record_landed() -> None:
    async def scenario(failing: set[int]) -> tuple[list[int], list[int] | BaseException]:
        producer = _Producer()
        landed: list[int] = []
        write = await _three_records_produced(producer, landed)
        producer.acknowledge(failing)
        outcome = (await asyncio.gather(write, return_exceptions=True))[0]
        return landed, outcome

    assert asyncio.run(scenario(set())) == ([2], [0, 1, 2])
    landed, outcome = asyncio.run(scenario({1}))
    assert landed == [] and isinstance(outcome, CheckpointError) and "c[0]" in str(outcome)


def test_a_hook_that_raises_fails_its_write() -> None:
    def refuse(offset: int) -> None:
        raise OSError(f"store closed at {offset}")

    async def raising() -> BaseException | int:
        producer = _Producer()
        write = asyncio.ensure_future(produce_acked(producer, "t", b"v", b"k", 0, landed=refuse))  # type: ignore[arg-type]
        await _until(lambda: bool(producer.callbacks))
        producer.acknowledge(failing=set())
        return (await asyncio.gather(write, return_exceptions=True))[0]

    outcome = asyncio.run(raising())
    assert isinstance(outcome, OSError) and "store closed at 0" in str(outcome)


def test_a_write_whose_writer_was_cancelled_still_runs_its_hook_once_it_lands() -> None:
    # A run stopped at its wall-clock limit mid-write: the record is in the changelog all
    # the same, and its store must hold it (the hook declines a store no longer current).
    async def given_up(failing: set[int]) -> tuple[list[int], bool]:
        producer = _Producer()
        landed: list[int] = []
        write = asyncio.ensure_future(produce_acked(producer, "t", b"v", b"k", 0, landed=landed.append))  # type: ignore[arg-type]
        await _until(lambda: bool(producer.callbacks))
        write.cancel()
        await asyncio.gather(write, return_exceptions=True)
        producer.acknowledge(failing)
        await _until(lambda: not delivery._deliveries(asyncio.get_running_loop())._reports)  # the batch is settled
        return landed, write.cancelled()

    assert asyncio.run(given_up(set())) == ([0], True)
    assert asyncio.run(given_up({0})) == ([], True)  # refused: nothing to store


def test_a_write_of_several_records_whose_writer_was_cancelled_runs_its_hook_once_all_landed() -> None:
    async def scenario(failing: set[int]) -> tuple[list[int], bool]:
        producer = _Producer()
        landed: list[int] = []
        write = await _three_records_produced(producer, landed)
        write.cancel()
        await asyncio.gather(write, return_exceptions=True)
        producer.acknowledge(set(failing), only=[0, 2])
        producer.acknowledge(set(failing), only=[1])
        await _until(lambda: not delivery._deliveries(asyncio.get_running_loop())._reports)  # the batch is settled
        return landed, write.cancelled()

    assert asyncio.run(scenario(set())) == ([2], True)
    assert asyncio.run(scenario({1})) == ([], True)


def test_a_writes_last_report_served_before_an_earlier_one_stores_the_write_once_all_landed() -> None:
    # Another thread (a checkpoint's flush) may hand an earlier record's report over later.
    async def scenario() -> tuple[list[int], list[int], list[int]]:
        producer = _Producer()
        landed: list[int] = []
        write = await _three_records_produced(producer, landed)
        producer.acknowledge(set(), only=[0, 2])
        await asyncio.sleep(0)  # that batch settles: the last record's report, before record 1's
        before = list(landed)
        producer.acknowledge(set(), only=[1])
        return before, landed, await write

    assert asyncio.run(scenario()) == ([], [2], [0, 1, 2])


def test_a_hooked_write_without_a_partition_is_refused_rather_than_left_unstored() -> None:
    async def scenario() -> None:
        await produce_acked(_Producer(), "t", b"v", b"k", None, landed=lambda offset: None)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="needs its partition"):
        asyncio.run(scenario())


@pytest.mark.parametrize("code, error_class", [
    (KafkaError._MSG_TIMED_OUT, ErrorClass.TRANSIENT),  # the cluster out of reach for message.timeout.ms
    (KafkaError.NOT_ENOUGH_REPLICAS, ErrorClass.TRANSIENT),
    (KafkaError.MSG_SIZE_TOO_LARGE, ErrorClass.PERMANENT),  # a topic's max.message.bytes: no wait helps
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, ErrorClass.PERMANENT),
])
def test_a_refused_write_is_classed_by_the_brokers_error(code: int, error_class: ErrorClass) -> None:
    reported = KafkaError(code)  # as a delivery report gives it: never marked retriable
    assert not reported.retriable()
    error = not_acknowledged(reported, _Record("c", 2, -1))  # type: ignore[arg-type]
    assert isinstance(error, CheckpointError) and "c[2]" in str(error)
    assert "(write to c[2])" in str(error.__cause__), "a dead letter's message names the write"
    # As a specialist's run fails on it: a checkpoint not recorded, from the refused write.
    try:
        raise StepNotRecorded("The head of task t1 could not be checkpointed") from error
    except StepNotRecorded as failed:
        assert classify(failed) is error_class


def test_a_fatal_error_is_never_marked_retriable_and_an_unreadable_one_still_fails_the_write() -> None:
    fatal = not_acknowledged(KafkaError(KafkaError._MSG_TIMED_OUT, "fenced", fatal=True), _Record("c", 0, -1))  # type: ignore[arg-type]
    assert classify(fatal) is ErrorClass.PERMANENT
    unreadable = not_acknowledged("broker down", _Record("c", 0, -1))  # type: ignore[arg-type]
    assert isinstance(unreadable, CheckpointError) and unreadable.__cause__ is None
