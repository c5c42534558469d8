"""The run loop's checkpoint runs beside its polls (runtime/checkpointing.py): a rebalance callback
that comes while it waits for the producer's reports, on the consumer's thread the commit
needs, must commit the prepared plan itself, once, before the stores close, and the
checkpoint must not then commit it again. Doubles stand in for the consumer, producer and
stores (no I/O); tests/integration/test_runtime.py covers rebalances on a real broker."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agentstream.runtime.errors import CheckpointError
from agentstream.runtime.offsets import PartitionOffsets
from agentstream.runtime.processor import Processor
from agentstream.runtime.unreported import Unreported

TOPIC = "tasks"
CHANGELOG = "beside-sessions-changelog"


class _Store:
    """A partition store's checkpoint surface; begin_flush refuses a second flush as the real one does."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.flushing = False
        self.dirty = True

    def begin_flush(self) -> dict[bytes, bytes | None]:
        assert not self.flushing, "a second flush began before the first ended"
        self.flushing, self.dirty = True, False
        self.events.append("begin")
        return {b"session": b"{}"}

    def finish_flush(self, changelog_offset: int | None) -> None:
        self.flushing = False
        self.events.append("finish")

    def abort_flush(self) -> None:
        self.flushing = False
        self.events.append("abort")

    def flush_if_older(self, age_s: float | None = None, now: float | None = None) -> bool:
        return False

    def close(self) -> None:
        assert not self.flushing, "closed mid-flush"
        self.events.append("close")


class _Table:
    def __init__(self, store: _Store) -> None:
        self.changelog_topic = CHANGELOG
        self.stores = {0: store}


class _Producer:
    def __init__(self) -> None:
        self.unreported = Unreported()

    def produce(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Consumer:
    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[str, int, int]], str]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(([(tp.topic, tp.partition, tp.offset) for tp in offsets], threading.current_thread().name))


def _processor() -> tuple[Processor, _Store, _Consumer, threading.Event]:
    processor = Processor("beside", "localhost:9", "beside", "unused-state-dir")  # no I/O until run()
    store = _Store()
    consumer = _Consumer()
    processor.tables["sessions"] = _Table(store)  # type: ignore[dict-item]
    processor._producer = _Producer()  # type: ignore[assignment]
    processor._consumer = consumer  # type: ignore[assignment]
    offsets = processor._offsets[(TOPIC, 0)] = PartitionOffsets()
    for offset in range(3):
        offsets.seen(offset)
    reported = threading.Event()  # the test says when the producer's reports are all served

    def wait_delivered(producer: object, unreported: object = None) -> int:
        assert reported.wait(5), "the test never let the reports be served"
        return 0

    processor._checkpoints.wait_delivered = wait_delivered  # type: ignore[method-assign,assignment]
    return processor, store, consumer, reported


def _revoke(processor: Processor) -> None:
    processor._revoke_callback(processor._consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]


async def _revoke_and_end(processor: Processor, release: threading.Event) -> None:
    """Queue a revocation on the consumer's thread (the poll lane), as a poll's callback
    comes, then ``release`` what the checkpoint waits for, and wait for both to end."""
    processor._loop = asyncio.get_running_loop()
    revoked = processor._poller.run(_revoke, processor)
    release.set()
    await asyncio.wait_for(revoked, 5)
    await asyncio.wait_for(processor._checkpoints.end_running(), 5)


def test_a_revocation_during_the_wait_for_reports_commits_the_running_checkpoint_once() -> None:
    """The callback holds the consumer's thread before the plan is ready, so the
    checkpoint's own commit can only come after it: the callback must commit the plan."""
    processor, store, consumer, reported = _processor()

    settle = processor._checkpoints._settle
    settling = asyncio.Event()

    async def settle_and_tell() -> object:
        settling.set()  # the scenario runs again only once this waits for the reports
        return await settle()

    processor._checkpoints._settle = settle_and_tell  # type: ignore[method-assign,assignment]

    async def scenario() -> None:
        processor._loop = asyncio.get_running_loop()
        assert processor._checkpoints.start_if_due()
        await asyncio.sleep(0)  # one turn: the checkpoint begins its flush and waits for the reports
        assert store.events == ["begin"]
        revoked = processor._poller.run(_revoke, processor)  # a poll's rebalance callback
        await asyncio.wait_for(settling.wait(), 5)
        reported.set()
        await asyncio.wait_for(revoked, 5)
        await asyncio.wait_for(processor._checkpoints.end_running(), 5)

    asyncio.run(scenario())
    processor._poller.close()
    assert consumer.commits == [([(TOPIC, 0, 3)], "beside-poll")], consumer.commits
    assert store.events == ["begin", "finish", "close"]
    assert (TOPIC, 0) not in processor._offsets


def test_a_revocation_right_after_the_checkpoints_commit_closes_the_stores_after_its_finish() -> None:
    """The lane is making the checkpoint's commit; a callback that comes next must not
    commit it again (the lane took the plan), and the stores close after the flushed state
    is written (finish). The loop's order alone finishes first here; the settling's own
    wait for that finish is not what this test can tell apart."""
    processor, store, consumer, reported = _processor()
    committing, go_on = threading.Event(), threading.Event()
    commit = consumer.commit

    def slow_commit(offsets: list[TopicPartition], asynchronous: bool) -> None:
        committing.set()
        assert go_on.wait(5)
        commit(offsets, asynchronous)

    consumer.commit = slow_commit  # type: ignore[method-assign]
    reported.set()

    async def scenario() -> None:
        assert processor._checkpoints.start_if_due()
        assert await asyncio.get_running_loop().run_in_executor(None, committing.wait, 5)
        await _revoke_and_end(processor, go_on)

    asyncio.run(scenario())
    processor._poller.close()
    assert consumer.commits == [([(TOPIC, 0, 3)], "beside-poll")], consumer.commits
    assert store.events == ["begin", "finish", "close"]


def test_a_checkpoint_beside_the_polls_commits_on_the_consumers_lane() -> None:
    processor, store, consumer, reported = _processor()
    reported.set()

    async def scenario() -> None:
        processor._loop = asyncio.get_running_loop()
        assert processor._checkpoints.start_if_due()
        await asyncio.wait_for(processor._checkpoints.end_running(), 5)

    asyncio.run(scenario())
    processor._poller.close()
    assert consumer.commits == [([(TOPIC, 0, 3)], "beside-poll")]
    assert store.events == ["begin", "finish"]
    assert processor._checkpoints.committed == {(TOPIC, 0): 3}


def test_a_checkpoint_that_has_run_a_commit_interval_is_overdue_until_it_ends() -> None:
    """The run loop stops its intake for an overdue checkpoint (the broker slow to
    acknowledge), so the loops' production dries up and the producer's queue can empty."""
    processor, store, consumer, reported = _processor()

    async def scenario() -> None:
        assert processor._checkpoints.start_if_due()
        running = processor._checkpoints._running
        assert running is not None and not processor._checkpoints.overdue()
        running.started -= processor.commit_interval  # as if it had waited a whole interval
        assert processor._checkpoints.overdue()
        reported.set()
        await asyncio.wait_for(processor._checkpoints.end_running(), 5)
        assert not processor._checkpoints.overdue()

    asyncio.run(scenario())
    processor._poller.close()
    assert consumer.commits == [([(TOPIC, 0, 3)], "beside-poll")]


def test_a_lost_assignment_during_the_wait_for_reports_commits_nothing_and_records_no_flush() -> None:
    """The partitions may be the next owner's already: the flush is given back to the
    buffer (then dropped with the store), never recorded with a changelog offset."""
    processor, store, consumer, reported = _processor()

    def lose(processor: Processor) -> None:
        processor._lost_callback(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]

    async def scenario() -> None:
        processor._loop = asyncio.get_running_loop()
        assert processor._checkpoints.start_if_due()
        lost = processor._poller.run(lose, processor)
        reported.set()
        await asyncio.wait_for(lost, 5)
        await asyncio.wait_for(processor._checkpoints.end_running(), 5)

    asyncio.run(scenario())
    processor._poller.close()
    assert consumer.commits == []
    assert store.events == ["begin", "abort", "close"]


def test_a_failed_checkpoint_stops_the_run_loop_and_is_raised() -> None:
    processor, store, consumer, reported = _processor()
    processor._checkpoints.delivery_errors.append("beside-sessions-changelog[0]: Broker: Not enough in-sync replicas")
    reported.set()

    async def scenario() -> None:
        assert processor._checkpoints.start_if_due()
        running = processor._checkpoints._running
        assert running is not None and running.task is not None
        await asyncio.wait([running.task])
        assert processor._stopping  # the run loop stops at its next record
        with pytest.raises(CheckpointError, match="Not enough in-sync replicas"):
            await processor._checkpoints.end_running()

    asyncio.run(scenario())
    processor._poller.close()
    assert consumer.commits == [] and store.events == ["begin", "abort"]


def test_a_commit_the_group_refuses_for_good_fails_the_worker_and_no_checkpoint_follows() -> None:
    """An authorization error is raised from run(); the shutdown's checkpoint must not
    then begin a flush of the stores the failed one holds (it would raise its own error)."""
    processor, store, consumer, reported = _processor()

    def refuse(offsets: list[TopicPartition], asynchronous: bool) -> None:
        raise KafkaException(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))

    consumer.commit = refuse  # type: ignore[method-assign]
    reported.set()

    async def scenario() -> None:
        assert processor._checkpoints.start_if_due()
        with pytest.raises(KafkaException):
            await processor._checkpoints.end_running()
        store.dirty = True  # written since
        assert await processor._checkpoints._prepare() is None

    asyncio.run(scenario())
    processor._poller.close()
    assert processor._stopping and store.events == ["begin"]


def test_the_shutdowns_checkpoint_of_a_flush_alone_does_not_wait_for_the_poll_thread() -> None:
    """A run() cancelled mid-poll leaves that poll on the consumer's thread, and a rebalance
    callback inside it may close the stores: a checkpoint with no offset to commit finishes
    its flush on the loop without queueing behind it."""
    processor, store, consumer, reported = _processor()
    processor._offsets.clear()  # nothing handled: the table writes alone
    reported.set()
    poll_goes_on = threading.Event()

    async def scenario() -> None:
        processor._loop = asyncio.get_running_loop()
        polling = processor._poller.run(poll_goes_on.wait, 30)  # the poll a cancelled run() left
        try:
            await asyncio.wait_for(processor._checkpoints.at_shutdown(), 2)
            assert store.events == ["begin", "finish"]
        finally:
            poll_goes_on.set()
            await polling

    asyncio.run(scenario())
    processor._poller.close()
    assert consumer.commits == []
