"""How a Processor wires its idle partitions (runtime/idle_partitions.py): which topics may
be paused and how, and that every handled record, not only a tier's, ends a quiet spell.
No I/O: the processor is never run, and the checks' ListOffsets is a stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition

from agentstream.runtime import MessageContext
from agentstream.runtime.offsets import PartitionOffsets
from agentstream.runtime.processor import Processor
from tests.unit.fetched import FetchedRecord

INPUT, TIER, DUE = "tasks", "tasks.retry-1", "x-due-ms"
QUIET_S = 1.0


def _record(offset: int, *, end: bool = False) -> FetchedRecord:
    """A fetched record of INPUT[0], or its partition's end (``end=True``: the EOF event)."""
    return FetchedRecord(INPUT, offset, end=end)


def _no_ends(tps: list[tuple[str, int]]) -> dict[TopicPartition, Future[Any]]:
    return {}  # nothing answered: these tests look at the pauses, not at the resumes


def _processor(*, pause_idle_tiers: bool = True, with_tier: bool = True) -> Processor:
    processor = Processor("idle", "localhost:9", "idle", "unused-state-dir", pause_idle_tiers=pause_idle_tiers)
    processor._list_ends = _no_ends  # type: ignore[method-assign]

    @processor.handler(INPUT)
    async def on_task(value: bytes, ctx: MessageContext) -> None:
        pass

    if with_tier:
        @processor.handler(TIER, due_header=DUE)
        async def on_retry(value: bytes, ctx: MessageContext) -> None:
            pass

    return processor


def test_the_tiers_are_paused_at_their_end_and_the_other_inputs_after_a_quiet_spell() -> None:
    idle = _processor()._idle_partitions(QUIET_S)
    assert idle is not None and idle.tiers == {TIER} and idle.quiet == {INPUT}


def test_tiers_kept_fetched_leave_the_quiet_inputs_paused_all_the_same() -> None:
    idle = _processor(pause_idle_tiers=False)._idle_partitions(QUIET_S)
    assert idle is not None and idle.tiers == frozenset() and idle.quiet == {INPUT}


def test_nothing_to_pause_makes_no_idle_partitions() -> None:
    assert _processor(with_tier=False)._idle_partitions(0.0) is None
    assert _processor(with_tier=False)._idle_partitions(QUIET_S) is not None


def _spell_after(records: list[FetchedRecord]) -> list[tuple[str, int]]:
    """The processor handles ``records`` of INPUT[0]; then the run loop's checks go on for
    longer than the quiet spell. What is paused then."""
    processor = _processor()
    idle = processor._idle_partitions(QUIET_S)
    assert idle is not None
    processor._idle = idle
    processor._offsets[(INPUT, 0)] = PartitionOffsets()
    idle.assigned([(INPUT, 0)])

    async def handle() -> None:
        processor._loop = asyncio.get_running_loop()
        for record in records:
            await processor._handle(record)  # type: ignore[arg-type]

    asyncio.run(handle())
    for tenth in range(round(3 * QUIET_S * 10)):
        idle.check_ends(tenth / 10)
    return idle.paused()


def test_an_input_at_its_end_is_paused_after_its_quiet_spell() -> None:
    assert _spell_after([_record(5, end=True)]) == [(INPUT, 0)]


def test_a_record_handled_after_the_end_keeps_the_input_fetched() -> None:
    # Handled at the end's offset, the record means the end is no longer the end: without
    # Processor._handle telling IdlePartitions, a busy input would be paused every spell.
    assert _spell_after([_record(5, end=True), _record(5)]) == []


class _Rebalancing:
    """A consumer whose poll runs a rebalance callback, then returns INPUT[0]'s end (the EOF
    event), as librdkafka's poll serves a rebalance and goes on fetching."""

    def __init__(self, rebalance: Callable[[], None]) -> None:
        self.rebalance = rebalance

    def poll(self, timeout: float) -> FetchedRecord:
        self.rebalance()
        return _record(5, end=True)

    def consume(self, most: int, timeout: float) -> list[FetchedRecord]:
        return []

    def resume(self, partitions: list[TopicPartition]) -> None:
        pass

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 5) for tp in partitions]

    def assign(self, partitions: list[TopicPartition]) -> None:
        pass


def _batch_after(callback: str, monkeypatch: Any) -> list[Any]:
    """The batch of a poll in which the processor's ``callback`` named INPUT[0]."""
    processor = _processor()
    processor._idle = processor._idle_partitions(QUIET_S)
    monkeypatch.setattr(processor, "_on_loop", lambda coro: coro.close())  # restores, drains nothing
    monkeypatch.setattr(processor, "_checkpoints", SimpleNamespace(commit_before_revocation=lambda: None,
                                                                 abort_before_loss=lambda: None))
    named = [TopicPartition(INPUT, 0)]
    consumer = _Rebalancing(lambda: getattr(processor, callback)(consumer, named))
    processor._consumer = consumer  # type: ignore[assignment]
    return processor._poll_batch()


def test_an_end_in_the_poll_that_assigned_its_partition_is_taken(monkeypatch: Any) -> None:
    # The new fetch's end: dropped, an input that never gets a record would stay fetched.
    assert [(msg.topic(), msg.offset()) for msg in _batch_after("_assign_callback", monkeypatch)] == [(INPUT, 5)]


def test_an_end_in_the_poll_that_revoked_or_lost_its_partition_is_dropped(monkeypatch: Any) -> None:
    # It may be the former fetch's end, past where a new fetch starts.
    assert _batch_after("_revoke_callback", monkeypatch) == []
    assert _batch_after("_lost_callback", monkeypatch) == []
