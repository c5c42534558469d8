"""A stream processor's checkpoints: the one order in which its progress becomes durable.

Commit order (periodically, on revocation and on shutdown; the periodic one runs beside the
polls, so the intake goes on while step 2 waits, and only step 3 takes the consumer's thread):
1. changelog records of buffered table writes are produced;
2. every record produced so far (step 1's and the outputs before them; not what is produced
   meanwhile: runtime/unreported.py) has its report served by the loop's pump
   (runtime/delivery_pump.py): outputs and changelog writes are acknowledged, or the processor
   stops with CheckpointError and commits nothing;
3. source offsets are committed (up to the oldest record whose spawned work is running);
4. the table writes and their changelog offsets are written to RocksDB.
A kill -9 between any two steps loses no state update whose source offset was committed.

Threads: steps 1 and 4 run on the event loop, step 2's wait in an executor, step 3 on the
consumer's thread: the processor's poll lane between two polls, or a rebalance callback,
which runs inside a poll and so holds that thread (librdkafka deadlocks a synchronous
commit made from any other thread meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from agentstream import metrics
from agentstream.runtime.delivery_pump import PumpedProducer, serve_soon, wait_for_room
from agentstream.runtime.errors import CheckpointError
from agentstream.runtime.lane import ThreadLane
from agentstream.runtime.offsets import TP, PartitionOffsets, commit_refusal_is_transient
from agentstream.runtime.stats import ProcessorStats
from agentstream.runtime.store import PartitionStore
from agentstream.runtime.table import Table

log = logging.getLogger(__name__)

OnLoop = Callable[[Coroutine[Any, Any, Any]], Any]  # runs a coroutine on the event loop from the poll thread


@dataclass(slots=True)
class _Plan:
    """Steps 3-4 of a checkpoint whose records are all acknowledged."""

    offsets: list[TopicPartition]
    flushing: list[tuple[TP, PartitionStore]]


@dataclass(slots=True)
class _Running:
    """The checkpoint the run loop started beside its polls (at most one runs).

    Steps 1-2 run on the event loop and in an executor; step 3 needs the consumer's
    thread, which a rebalance callback may hold meanwhile: the callback then commits the
    prepared plan itself (``ready`` goes to whoever takes it first)."""

    started: float
    prepared: asyncio.Event = field(default_factory=asyncio.Event)  # steps 1-2 ended (or failed)
    ready: _Plan | None = None  # prepared and not taken for its commit yet
    taken_by_lane: bool = False  # the commit was made on the run loop's lane; it finishes on the loop
    task: asyncio.Task[None] | None = None


class Checkpoints:
    """What a processor has committed, the checkpoint running beside its polls, and
    whether one failed (then no later one begins: its flush still holds the stores)."""

    def __init__(
        self,
        name: str,
        *,
        commit_interval: float,
        flush_timeout: float,
        tables: dict[str, Table],
        offsets: dict[TP, PartitionOffsets],
        stats: ProcessorStats,
        producer: Callable[[], PumpedProducer],
        consumer: Callable[[], Consumer | None],
        poller: ThreadLane,
        on_loop: OnLoop,
        on_failure: Callable[[], None],
    ) -> None:
        self.name = name
        self.commit_interval = commit_interval
        self.flush_timeout = flush_timeout  # how long step 2 waits for the acknowledgements
        self.committed: dict[TP, int] = {}  # the offset the group holds, per partition owned
        self.failed = False
        self.delivery_errors: list[str] = []  # outputs and changelog records the broker refused
        self.next_due = 0.0  # monotonic: when the run loop's next checkpoint is due
        self._tables = tables
        self._offsets = offsets
        self._stats = stats
        self._producer = producer
        self._consumer = consumer
        self._poller = poller
        self._on_loop = on_loop
        self._delivered = threading.Event()  # set when what a wait waits for may be all reported (all_delivered)
        self._stop_waiting = False  # the processor has stopped: wait_delivered returns at once
        self._on_failure = on_failure
        self._changelog_acked: dict[TP, int] = {}
        self._running: _Running | None = None  # the run loop's, while it runs or until collected
        self._commit_refused: str | None = None  # the last commit's refusal, if it was refused (the poll thread's)
        self._observe_checkpoint = metrics.checkpoint_seconds().labels(name).observe
        self._observe_offset_commit = metrics.offset_commit_seconds().labels(name).observe

    # -- the run loop's ------------------------------------------------------------------
    def schedule_from(self, now: float) -> None:
        """The run's start: the first periodic checkpoint is due one commit_interval later."""
        self.next_due = now + self.commit_interval

    def start_if_due(self) -> bool:
        """Start the periodic checkpoint beside the polls once its time has come and the one
        before has ended (what that one raised stops the processor); whether it started."""
        running = self._running
        if running is not None:
            assert running.task is not None
            if not running.task.done():
                return False
            self._running = None
            running.task.result()
        now = time.monotonic()
        if now < self.next_due:
            return False
        self.next_due = now + self.commit_interval
        running = self._running = _Running(now)
        running.task = asyncio.ensure_future(self._beside_polls(running))
        running.task.add_done_callback(self._stop_if_failed)
        return True

    def running_task(self) -> asyncio.Task[None] | None:
        """The checkpoint running beside the polls, if one does (its end may make the next due)."""
        return None if self._running is None else self._running.task

    def overdue(self) -> bool:
        """Whether the running checkpoint has run a whole commit_interval. Its wait for the
        reports of the records produced before it began takes a round trip; while the broker
        is slow to acknowledge (a leader lost: seconds) the run loop takes in nothing until
        it ends, as it did before checkpoints ran beside the polls, so that no more records
        pile up behind the slow ones. (Until session 36 the wait was for the producer to
        hold no record at all, which loops fed by an intake that went on could keep from
        happening for a whole interval under a load the broker kept up with.)"""
        running = self._running
        return running is not None and time.monotonic() - running.started >= self.commit_interval

    async def end_running(self) -> None:
        """Wait for the running checkpoint to end (the run loop calls it between polls: the
        poll thread is free for its commit); what it raised is raised here."""
        running = self._running
        if running is None or running.task is None:
            return
        await asyncio.wait([running.task])
        self._running = None  # only now: a run() cancelled above leaves it for the shutdown to wait for
        running.task.result()

    async def at_shutdown(self) -> None:
        """The shutdown's checkpoint, once the running one ended, while the poll thread is idle."""
        started = time.monotonic()
        plan = await self._prepare()
        if plan is None:
            return
        if plan.offsets:  # only a commit needs the poll thread (a cancelled run() may have left a poll on it)
            plan = await self._poller.run(self._commit_plan, plan)
        self._finish(plan)
        self._observe_checkpoint(time.monotonic() - started)

    def flush_old_memtables(self) -> None:
        """Each store's writes reach a table file within a minute: with no write-ahead log, a
        start after a kill -9 replays the changelog from what is on disk (runtime/store.py)."""
        now = time.monotonic()
        for table in self._tables.values():
            for store in list(table.stores.values()):
                store.flush_if_older(now=now)

    # -- the rebalance callbacks' (on the poll thread) -----------------------------------
    def commit_before_revocation(self) -> None:
        """Commit the running checkpoint (its flush holds the stores), then everything
        since, so the next owner starts where this worker stopped. Like every checkpoint, it
        waits for the records produced before it began: work of these partitions still
        running after the drain's grace may write later (it holds its offsets back, and
        a late write to a store no longer this worker's is declined: runtime/write_through.py)."""
        self._commit_and_finish_from_callback(self._on_loop(self._settle()))
        self._commit_and_finish_from_callback(self._on_loop(self._prepare()))

    def abort_before_loss(self) -> None:
        """The partitions were not this worker's since before the running checkpoint's
        records landed, maybe after the next owner's: a changelog offset recorded now could
        make a later restore skip theirs, so its flush goes back to the buffer."""
        plan = self._on_loop(self._settle())
        if plan is not None:
            self._on_loop(self._abort_on_loop(plan))

    def forget(self, tps: list[TP]) -> None:
        """The partitions are no longer this worker's: their committed offsets go."""
        for tp in tps:
            self.committed.pop(tp, None)

    # -- delivery reports (served on the loop's thread by the processor's pump) ----------
    def all_delivered(self) -> None:
        """The pump found the producer holding no unreported record, or the records a
        checkpoint waits for are all reported (Unreported.on_settled)."""
        self._delivered.set()

    def stop_waiting(self) -> None:
        """The pump is closing: a wait_delivered now running (or to come) returns at once
        with what is left, instead of waiting flush_timeout for reports nobody serves."""
        self._stop_waiting = True
        self._delivered.set()

    def wait_delivered(self, producer: Producer, unreported: Callable[[], int] | None = None) -> int:
        """Block until every record the producer holds is acknowledged and its report served
        (by the pump on the loop's thread, never here: runtime/delivery.py says why one
        thread serves them), at most flush_timeout; the number left. ``unreported``: the
        count to wait for instead, a checkpoint's (the records produced before it began:
        runtime/unreported.py). Never called on the loop's thread: the pump would not run
        meanwhile."""
        left = unreported or producer.__len__
        deadline = time.monotonic() + self.flush_timeout
        while left() > 0 and not self._stop_waiting:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            self._delivered.clear()
            # Served, or stopped, between the checks above and the clear (stop_waiting sets
            # its flag before the event: a set undone by this clear is seen here).
            if left() == 0 or self._stop_waiting:
                break
            serve_soon(producer)
            self._delivered.wait(remaining_s)  # a set from before the clear only costs one more turn
        return left()

    def on_output_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """An output's report: a refused one fails the next checkpoint (nothing is committed)."""
        if err is not None:
            self.delivery_errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def on_changelog_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """A changelog record's report: its offset is what step 4 records with the store."""
        if err is not None:
            self.delivery_errors.append(f"changelog {msg.topic()}[{msg.partition()}]: {err}")
            return
        tp = (msg.topic(), msg.partition())
        if msg.offset() > self._changelog_acked.get(tp, -1):
            self._changelog_acked[tp] = msg.offset()

    # -- the steps -----------------------------------------------------------------------
    async def _beside_polls(self, running: _Running) -> None:
        """The run loop's checkpoint: the run loop goes on polling while the producer's
        reports are awaited (step 2, up to hundreds of ms with 1,000 loops producing), and
        the commit (step 3) takes the consumer's thread between two polls. Then the flush
        of every store whose oldest unflushed write is old (also when the checkpoint had
        nothing to do, or failed)."""
        try:
            try:
                running.ready = await self._prepare()
            finally:
                running.prepared.set()
            if running.ready is not None:
                plan = await self._poller.run(self._commit_ready, running)
                if plan is not None:
                    self._finish(plan)
                self._observe_checkpoint(time.monotonic() - running.started)
        finally:
            self.flush_old_memtables()

    def _commit_ready(self, running: _Running) -> _Plan | None:
        """Step 3 of the run loop's checkpoint, on the poll lane; None if a rebalance
        callback took the plan first (it committed and finished it)."""
        plan, running.ready = running.ready, None
        if plan is None:
            return None
        running.taken_by_lane = True
        return self._commit_plan(plan)

    async def _settle(self) -> _Plan | None:
        """For a rebalance callback (it holds the poll thread): the running checkpoint's
        plan once prepared, for the callback to commit, or None. A plan the lane committed
        already is finished on the loop before this returns: the callback may then close its
        partitions' stores."""
        running = self._running
        if running is None:
            return None
        await running.prepared.wait()
        plan, running.ready = running.ready, None
        if plan is None and running.taken_by_lane:
            assert running.task is not None
            await asyncio.wait([running.task])  # it needs the loop only now, not the poll thread
        return plan

    def _stop_if_failed(self, task: asyncio.Task[None]) -> None:
        """A checkpoint that failed stops the run loop at its next record, not after the
        batch (it then raises what the checkpoint raised: end_running)."""
        if not task.cancelled() and task.exception() is not None:
            self._on_failure()

    async def _prepare(self) -> _Plan | None:
        """Steps 1-2: produce changelog records and wait for every acknowledgement; the
        plan of what to commit, or None when there is nothing to do."""
        if self.failed:
            return None
        producer = self._producer()
        # Snapshot what is committable before flushing: work that finishes during the
        # flush may have produced after it began, so it waits for the next checkpoint.
        offsets = []
        for tp, tracker in self._offsets.items():
            offset = tracker.committable()
            if offset is not None and offset != self.committed.get(tp):
                offsets.append(TopicPartition(tp[0], tp[1], offset))
        flushing: list[tuple[TP, PartitionStore]] = []
        for table in self._tables.values():
            for partition, store in table.stores.items():
                if not store.dirty:
                    continue
                for key, value in store.begin_flush().items():
                    self._produce_changelog(producer, table.changelog_topic, partition, key, value)
                flushing.append(((table.changelog_topic, partition), store))
        if not offsets and not flushing and not self.delivery_errors:
            return None
        # Only the records produced up to now: what the loops produce meanwhile is the next
        # checkpoint's (waiting for the producer to hold none could last the whole interval).
        unreported = producer.unreported
        unreported.on_settled = self.all_delivered  # wakes the wait below when they are all in
        unreported.mark()
        remaining = await asyncio.get_running_loop().run_in_executor(
            None, self.wait_delivered, producer, lambda: unreported.before)
        if remaining or self.delivery_errors:
            self.failed = True
            for _, store in flushing:
                store.abort_flush()
            problems = self.delivery_errors[:5] or [f"{remaining} records still unacknowledged after {self.flush_timeout:.0f} s"]
            raise CheckpointError(
                f"{self.name}: not committing source offsets, the broker did not acknowledge every "
                f"output/changelog record ({len(self.delivery_errors)} failed): {'; '.join(problems)}"
            )
        return _Plan(offsets, flushing)

    def _commit_plan(self, plan: _Plan) -> _Plan:
        """Step 3 of ``plan`` on the consumer's thread: what step 4 may write. A commit
        refused for a passing reason keeps only the flush (its records are acknowledged)."""
        if plan.offsets and not self._commit(plan.offsets):
            return _Plan([], plan.flushing)
        return plan

    def _commit(self, offsets: list[TopicPartition]) -> bool:
        """Step 3, always on the poll thread (the module's docstring says why).

        False when the group refused the commit for a passing reason (the coordinator moved
        to another broker, the member was fenced or a rebalance began): the outputs and
        changelog records are acknowledged already, so the records are simply processed
        again by whoever owns them next (at least once), and the consumer rejoins on its
        next poll. Anything else (authorization, a fatal error) stops the processor.
        """
        consumer = self._consumer()
        assert consumer is not None
        started = time.monotonic()
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if not commit_refusal_is_transient(error):
                # Failed: no later checkpoint (shutdown's, a revocation's) begins on stores
                # this one's flush still holds, and hides this error behind its own.
                self.failed = True
                raise
            # Once per refusal: commits made while every slot is taken may meet the same one
            # each commit interval until the next poll rejoins the group.
            repeated, self._commit_refused = error.str() == self._commit_refused, error.str()
            (log.debug if repeated else log.warning)(
                "%s: offsets not committed (%s); their records will be processed again", self.name, error.str())
            return False
        finally:
            self._observe_offset_commit(time.monotonic() - started)
        self._commit_refused = None
        return True

    def _finish(self, plan: _Plan) -> None:
        """Step 4: the committed state reaches RocksDB with its changelog offsets."""
        for tp in plan.offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset
        for changelog_tp, store in plan.flushing:
            store.finish_flush(self._changelog_acked.get(changelog_tp))
        self._stats.checkpoints += 1
        self._stats.last_checkpoint_at = time.time()

    def _commit_and_finish_from_callback(self, plan: _Plan | None) -> None:
        """Steps 3-4 of ``plan`` from a rebalance callback (the poll thread)."""
        if plan is not None:
            self._on_loop(self._finish_on_loop(self._commit_plan(plan)))

    async def _finish_on_loop(self, plan: _Plan) -> None:
        self._finish(plan)

    async def _abort_on_loop(self, plan: _Plan) -> None:
        for _, store in plan.flushing:
            store.abort_flush()

    def _produce_changelog(self, producer: Producer, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                producer.produce(topic, value, key, partition=partition, on_delivery=self.on_changelog_delivery)
                return
            except BufferError:  # the local queue is full: served reports free it
                wait_for_room(producer)
