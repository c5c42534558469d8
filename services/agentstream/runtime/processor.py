"""A stream processor: one consumer group, async handlers per input topic, tables, outputs.

The event loop does not wait on Kafka: polling runs in a dedicated thread, and the
rebalance callbacks librdkafka calls from inside ``poll`` hand their work back to the
event loop, so all state is touched by one thread only. The producer's delivery reports
are served on the loop's own thread by a non-blocking ``poll(0)``: each time a worker's
loop wakes, or every millisecond on another loop (runtime/delivery_pump.py); only a full
local queue makes the loop wait for reports, up to 50 ms at a time.

How its progress becomes durable, and in which order, is runtime/checkpointing.py's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from agentstream.broker import fetch_wait_for, group_protocol_for
from agentstream.clients import CLASSIC, admin_config, consumer_config, producer_config, reader_config
from agentstream.runtime.changelog import RestoreReport, read_partition, read_partitions, restore
from agentstream.runtime.checkpointing import Checkpoints
from agentstream import metrics
from agentstream.runtime.health import Health
from agentstream.runtime.lag import fetched_lag, group_committed, watermarks
from agentstream.runtime.consumer_calls import ConsumerCalls
from agentstream.runtime.context import MessageContext, current_context
from agentstream.runtime.delivery_pump import DeliveryPump, PumpedProducer
from agentstream.runtime.fetch_start import assign_from_committed
from agentstream.runtime.expiry import Expiry, Stamp, WrittenAt
from agentstream.runtime.errors import HandlerError, ProcessorError, RestoreInterrupted
from agentstream.runtime.hold import DueHolds
from agentstream.runtime.idle_partitions import LIST_ENDS_TIMEOUT_S, QUIET_CHECK_INTERVAL_S, IdlePartitions, quiet_pause_for
from agentstream.runtime.lane import ThreadLane
from agentstream.runtime.loop_lag import LoopLagProbe
from agentstream.runtime.offsets import TP, PartitionOffsets
from agentstream.runtime.outputs import Outputs
from agentstream.runtime.retention import Retention
from agentstream.runtime.spawned import SpawnedWork
from agentstream.runtime.stats import ProcessorStats
from agentstream.runtime.store import PartitionStore
from agentstream.runtime.table import Table
from agentstream.runtime.topics import co_partitioned_inputs, ensure_changelogs
from agentstream.runtime.write_through import WriteThrough
from agentstream.telemetry import log_context
from agentstream.telemetry.handling import Handling
from agentstream.telemetry.kafka_requests import with_statistics
from agentstream.unanswered import asked

log = logging.getLogger(__name__)

POLL_S = 0.1  # the longest a poll waits for a record: the run loop's turn when nothing comes
CHECKING_POLL_S = 0.01  # ... while IdlePartitions waits for the answers of its check

Decoder = Callable[[bytes], Any]
Handler = Callable[[Any, MessageContext], Awaitable[None]]

_T = TypeVar("_T")


def _raw(value: bytes) -> bytes:
    return value


def _is_end(msg: Message) -> bool:
    err = msg.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF


@dataclass(slots=True)
class _Binding:
    topic: str
    handler: Handler
    decode: Decoder
    due_header: str | None = None


class Processor:
    """A consumer group with async handlers, RocksDB tables and a safe commit order."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        group_id: str,
        state_dir: Path | str,
        *,
        commit_interval: float = 1.0,
        max_inflight: int = 256,
        shutdown_grace: float = 10.0,
        producer_overrides: dict[str, Any] | None = None,
        flush_timeout: float = 30.0,
        group_protocol: str = CLASSIC,
        fetch_wait_ms: int | None = None,
        changelog_config: dict[str, str] | None = None,
        health_stall: float = 30.0,
        pause_idle_tiers: bool = True,
        quiet_pause_s: float | None = None,
        kafka_stats_s: int = 0,
    ) -> None:
        if commit_interval <= 0:
            raise ProcessorError(f"commit_interval must be > 0 seconds, got {commit_interval}.")
        self.name = name
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.state_dir = Path(state_dir)
        self.max_inflight = max_inflight
        self.shutdown_grace = shutdown_grace
        self.group_protocol = group_protocol
        self.fetch_wait_ms = fetch_wait_ms  # None: by broker (broker.fetch_wait_for)
        self._changelog_config = changelog_config or {}
        self._producer_overrides = producer_overrides or {}
        self._bindings: dict[str, _Binding] = {}
        self._tables: dict[str, Table] = {}
        self.stats = ProcessorStats()
        self.health = Health(health_stall)  # read by the probes of telemetry/server.py
        self._offsets: dict[TP, PartitionOffsets] = {}
        self._hooked: set[int] = set()  # partitions the assignment hooks have had (_assigned)
        self._spawned = SpawnedWork(self._offsets, self._report)
        self._assign_hooks: list[Callable[[list[int]], Awaitable[None]]] = []
        self._stop_hooks: list[Callable[[], None]] = []
        self._closing = threading.Event()
        self._draining: set[TP] = set()
        self._consumer_calls = ConsumerCalls()  # made by the poll thread before its next poll
        self._holds_due = DueHolds(self._consumer_calls)  # retry-tier partitions held until their head is due
        self._pause_idle_tiers = pause_idle_tiers
        self._quiet_pause_s = quiet_pause_s  # None: by fetch wait (idle_partitions.quiet_pause_for)
        # 0: its clients' requests are not counted (telemetry/kafka_requests.py). On a loop not
        # made by new_serving_loop an idle producer's statistics wait for its next produce.
        self._kafka_stats_s = kafka_stats_s
        self._idle: IdlePartitions | None = None  # made in _start when something may be paused
        self._revoked_in_poll: set[TP] = set()  # partitions the revoke and loss callbacks of this poll named
        self._admin: AdminClient | None = None
        self._stopping = False
        self._consumer: Consumer | None = None
        self._protocol = CLASSIC  # the group protocol the consumer joined with (_start)
        self._producer: PumpedProducer | None = None
        self._pump: DeliveryPump | None = None
        self._reader: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._last_activity = 0.0  # input, assignment or start: the idle clock's origin
        self._poller = ThreadLane(f"{name}-poll")  # the consumer's thread: poll, commit, close
        self._partition_count = 0
        self._writes = WriteThrough(self._require_producer, metrics.acked_write_seconds().labels(name).observe)
        self._retention = Retention(name, self.stats, self._writes.persist_expired, resume_s=commit_interval)
        self._loop_lag = LoopLagProbe(metrics.event_loop_lag_seconds().labels(name).observe)
        self._checkpoints = Checkpoints(
            name, commit_interval=commit_interval, flush_timeout=flush_timeout, tables=self._tables,
            offsets=self._offsets, stats=self.stats, producer=self._require_producer, consumer=lambda: self._consumer,
            poller=self._poller, on_loop=self._on_loop, on_failure=self.stop)
        self._outputs = Outputs(self._require_producer, self._checkpoints.on_output_delivery)

    @property
    def tables(self) -> dict[str, Table]:
        """The declared tables by name (one dict for the processor's life: its checkpoints hold it)."""
        return self._tables

    @property
    def commit_interval(self) -> float:
        """Seconds between the run loop's checkpoints."""
        return self._checkpoints.commit_interval

    @property
    def flush_timeout(self) -> float:
        """How long a checkpoint waits for the broker's acknowledgements before it fails."""
        return self._checkpoints.flush_timeout

    # -- declaration ---------------------------------------------------------------------
    def table(
        self,
        name: str,
        *,
        changelog_topic: str | None = None,
        dumps: Callable[[Any], bytes] | None = None,
        loads: Callable[[bytes], Any] | None = None,
    ) -> Table:
        """Declare a table; its changelog defaults to ``<group>.<name>.changelog``."""
        if name in self.tables:
            raise ProcessorError(f"Table {name!r} is declared twice on processor {self.name!r}.")
        kwargs: dict[str, Any] = {}
        if dumps is not None:
            kwargs["dumps"] = dumps
        if loads is not None:
            kwargs["loads"] = loads
        table = Table(name, changelog_topic or f"{self.group_id}.{name}.changelog", **kwargs)
        self.tables[name] = table
        return table

    def expire(
        self,
        table: Table,
        retention_s: float,
        written_at: WrittenAt,
        *,
        stamp: Stamp | None = None,
        prefix: bytes = b"",
        write_through: bool = False,
    ) -> Expiry:
        """Delete entries of ``table`` written more than ``retention_s`` ago (see
        runtime/expiry.py): a bounded walk per partition, every ``retention_s / 10`` (between
        0.5 s and 60 s); a walk longer than its batch goes on at a pace that visits each key
        again within about a tenth of the retention (runtime/retention.py: each table and
        partition on its own schedule). The deletes go through the checkpoint like a
        handler's, or, for a ``write_through`` table (one written with persist()), are
        persisted the same way."""
        return self._retention.add(table, retention_s, written_at, stamp=stamp, prefix=prefix, write_through=write_through)

    def handler(
        self, topic: str, decode: Decoder | None = None, *, due_header: str | None = None
    ) -> Callable[[Handler], Handler]:
        """Register ``async def fn(value, ctx)`` for ``topic``; ``decode`` turns bytes into value.

        With ``due_header``, a record whose header holds a time (epoch ms) still in the
        future is not handled yet: its partition is paused and rewound to it until then,
        while every other partition goes on (the hold of a retry tier). Such a topic's
        partitions are also paused while every record of them was taken, so fetches do
        not name them (runtime/idle_partitions.py; ``pause_idle_tiers=False`` keeps them fetched).
        """

        def register(fn: Handler) -> Handler:
            if topic in self._bindings:
                raise ProcessorError(f"Topic {topic!r} already has a handler on processor {self.name!r}.")
            self._bindings[topic] = _Binding(topic, fn, decode or _raw, due_header)
            return fn

        return register

    # -- used inside handlers ------------------------------------------------------------
    def send(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue an output record; it is acknowledged before the source offset is committed
        (runtime/outputs.py)."""
        self._outputs.send(topic, value, key, partition, headers)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the partition; its record's offset is committed when it ends
        (or earlier, when the work calls :meth:`release`). See runtime/spawned.py."""
        self._spawned.spawn(work)

    def spawn_resumed(self, work: Coroutine[Any, Any, None], topic: str, partition: int) -> None:
        """Run ``work`` for an assigned partition with no source record to hold back."""
        self._spawned.spawn_resumed(work, topic, partition)

    def release(self) -> None:
        """Called by spawned work once its input is durably recorded elsewhere: the source
        offset may be committed now, while the work goes on."""
        self._spawned.release()

    def persist(
        self, table: Table, key: str | bytes, value: Any, *, partition: int | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Write-through (runtime/write_through.py): send ``key → value`` (None deletes) to
        the table's changelog and wait until the broker acknowledges it; stored as its
        acknowledgement is settled. For state that must survive a kill -9 at once (step
        checkpoints); do not mix with buffered writes on one table. ``partition`` defaults to
        the partition of the record being handled."""
        return self._writes.persist(table, key, value, partition=partition)

    def persist_all(self, table: Table, items: list[tuple[str | bytes, Any]], *, partition: int) -> Coroutine[Any, Any, None]:
        """persist() of several keys of one partition at once: produced in this order,
        acknowledged together, stored in one batch (runtime/write_through.py)."""
        return self._writes.persist_all(table, items, partition=partition)

    def send_acked(
        self, topic: str, value: bytes | None, key: str | bytes | None, *, partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Coroutine[Any, Any, int]:
        """Send one record and wait until the broker acknowledges it; its offset."""
        return self._writes.send_acked(topic, value, key, partition=partition, headers=headers)

    async def read_to_end(self, topic: str, partition: int, from_offset: int) -> list[tuple[bytes | None, bytes | None, int]]:
        """Records of one partition from ``from_offset`` to its end (for recovery checks)."""
        assert self._reader is not None
        return await asyncio.get_running_loop().run_in_executor(None, read_partition, self._reader, topic, partition, from_offset)

    async def read_partitions_to_end(
        self, topic: str, starts: dict[int, int], *, timeout: float = 60.0, keep: Callable[[bytes | None], bool] | None = None,
    ) -> dict[int, list[tuple[bytes | None, bytes | None, int]]]:
        """Records of each partition in ``starts`` (partition -> offset) to its end, read at
        once (for recovery checks); with ``keep``, only those whose value it keeps. A stop
        requested meanwhile ends it with RestoreInterrupted."""
        assert self._reader is not None
        return await asyncio.get_running_loop().run_in_executor(
            None, partial(read_partitions, self._reader, topic, starts, timeout, keep, lambda: self._stopping))

    async def committed(self, topic: str, partitions: list[int]) -> dict[int, int | None]:
        """The group's committed offset of each of ``partitions`` of ``topic`` (None: never
        committed). A probe outside the group asks: only the poll thread touches the
        consumer, and an assignment hook runs while that thread waits in its callback."""
        return await asyncio.get_running_loop().run_in_executor(
            None, group_committed, self.bootstrap, self.group_id, topic, partitions)

    def assigned_partitions(self) -> set[int]:
        return {partition for _, partition in self._offsets}

    @property
    def partition_count(self) -> int:
        """Partitions of each input topic (they are co-partitioned)."""
        return self._partition_count

    def on_assign(self, hook: Callable[[list[int]], Awaitable[None]]) -> None:
        """Call ``hook(partitions)`` after newly assigned partitions are restored."""
        self._assign_hooks.append(hook)

    def on_stop(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` once the processor has stopped (its consumer closed, output flushed)."""
        self._stop_hooks.append(hook)

    # -- running -------------------------------------------------------------------------
    async def run(
        self,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
        *,
        handle_signals: bool = False,
    ) -> ProcessorStats:
        """Process until stopped, ``max_messages`` handled, or ``idle_timeout`` s without input."""
        if not self._bindings:
            raise ProcessorError(f"Processor {self.name!r} has no handlers; register one with @processor.handler(topic).")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        log_context.bind(worker=self.name)  # this run's context: every line it and its work log
        if handle_signals:
            # signal.signal, not loop.add_signal_handler: asyncio learns of a signal through
            # its self-pipe, which a flood of call_soon_threadsafe (delivery reports served
            # by a thread, until session 26) filled under load, and then the signal is lost.
            # A plain handler sets the flag anyway; the loop sees it after the current poll
            # (at most 0.1 s).
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: self.stop())
        await self._loop.run_in_executor(None, self._start)
        self._pump_deliveries()
        self._loop_lag.start(self._loop)
        self._last_activity = time.monotonic()
        self._checkpoints.schedule_from(self._last_activity)
        self._retention.start()
        try:
            while not self._stopping:
                await self._wait_for_slot()
                if self._checkpoints.overdue():
                    await self._checkpoints.end_running()
                batch = await self._poller.run(self._poll_batch)
                self.health.beat()
                now = time.monotonic()
                if batch:
                    self._last_activity = now
                    for msg in batch:
                        # Per record, not per batch: a batch holds up to 500 records, and each
                        # may start a loop (max_inflight would otherwise overshoot by a batch).
                        if self._spawned.running >= self.max_inflight:  # no coroutine per record otherwise
                            await self._wait_for_slot()
                        if self._stopping:
                            break  # the rest is not seen, so not committed: the next owner takes it
                        await self._handle(msg)
                    if max_messages is not None and self.stats.processed + self.stats.failed >= max_messages:
                        break
                elif idle_timeout is not None and now - self._last_activity >= idle_timeout and self._spawned.running == 0:
                    break
                self._checkpoints.start_if_due()
                if self._idle is not None:
                    self._idle.check_ends(now)
                if now >= self._retention.next_due:
                    await self._retention.run_due(self.assigned_partitions(), lambda: self._checkpoints.failed)
        finally:
            await self._shutdown()
        return self.stats

    def stop(self) -> None:
        """Ask the processor to drain and stop (safe from a signal handler)."""
        self._stopping = True

    async def _wait_for_slot(self) -> None:
        """Wait until fewer than max_inflight loops run. A full executor is healthy, so the
        heartbeat goes on meanwhile; a blocked event loop cannot beat (runtime/health.py).
        Commits go on meanwhile: with every slot taken, a fetched batch lasts as long as its
        loops (tens of seconds with slow models), and the offsets of the loops that ended
        would otherwise wait for its end (a record not handled yet is not seen: no offset
        beyond it is committed)."""
        while self._spawned.running >= self.max_inflight:  # the common case skips the wait's cost
            slot = asyncio.ensure_future(self._spawned.slot(self.max_inflight))
            running = self._checkpoints.running_task()
            if running is None:
                wakers, wait_s = {slot}, min(self._checkpoints.next_due - time.monotonic(), self.health.stall_s / 3)
            else:  # its end may make the next one due
                wakers, wait_s = {slot, running}, self.health.stall_s / 3
            done, _ = await asyncio.wait(wakers, timeout=max(wait_s, 0.0), return_when=asyncio.FIRST_COMPLETED)
            if slot in done:
                return
            slot.cancel()
            self.health.beat()
            if not self._checkpoints.start_if_due():  # a checkpoint asks the stores too
                self._checkpoints.flush_old_memtables()  # a commit_interval above stall_s / 3

    def partition_lag(self) -> dict[TP, int]:
        """Records behind the end of each assigned partition, from what the consumer last
        fetched (no request to the broker; safe from another thread, e.g. a metrics scrape)."""
        consumer = self._consumer
        if consumer is None or self._closing.is_set():
            return {}
        return fetched_lag(consumer, list(self._offsets), dict(self._checkpoints.committed))

    def _start(self) -> None:
        admin = AdminClient(admin_config(self.bootstrap))
        self._admin = admin
        self._partition_count = co_partitioned_inputs(admin, self.name, self._bindings, self.bootstrap)
        ensure_changelogs(admin, [table.changelog_topic for table in self.tables.values()], self._partition_count,
                          self._changelog_config, self.bootstrap)
        # Its delivery reports are served on the event loop's thread (run(): runtime/delivery_pump.py).
        self._producer = PumpedProducer(self._counted(producer_config(self.bootstrap, self._producer_overrides), "producer"))
        reader = self._reader = Consumer(reader_config(self.bootstrap))  # not counted: kafka_requests.py
        for topic in (table.changelog_topic for table in self.tables.values()):
            # Metadata now, so the first restore of a changelog (a takeover, often) need not
            # wait for librdkafka's next refresh to learn of it (0.4-0.9 s on Kafka).
            asked(partial(reader.list_topics, topic, timeout=10), call=f"Metadata of {topic}",
                  purpose=f"{self.name} could not start on the cluster at {self.bootstrap}")
        fetch_wait_ms = fetch_wait_for(self.fetch_wait_ms, self.bootstrap)
        self._idle = self._idle_partitions(quiet_pause_for(self._quiet_pause_s, fetch_wait_ms))
        self._outputs.idle = self._idle
        self._protocol = group_protocol_for(self.group_protocol, self.bootstrap)
        consumer = Consumer(self._counted(consumer_config(self.bootstrap, self.group_id, protocol=self._protocol,
                                                          fetch_wait_ms=fetch_wait_ms, partition_eof=self._idle is not None),
                                          "consumer"))
        consumer.subscribe(
            list(self._bindings), on_assign=self._assign_callback, on_revoke=self._revoke_callback, on_lost=self._lost_callback
        )
        self._consumer = consumer
        log.info("%s: consuming %s as group %s", self.name, ", ".join(self._bindings), self.group_id)

    def _counted(self, config: dict[str, Any], client: str) -> dict[str, Any]:
        return with_statistics(config, self._kafka_stats_s, self.name, client)

    def _idle_partitions(self, quiet_s: float) -> IdlePartitions | None:
        """What pauses this processor's idle partitions: its retry tiers (unless
        ``pause_idle_tiers=False``), and its other inputs after ``quiet_s`` without a record
        (0: never); None when there is nothing to pause."""
        tiers = [b.topic for b in self._bindings.values() if b.due_header is not None] if self._pause_idle_tiers else []
        quiet = [b.topic for b in self._bindings.values() if b.due_header is None] if quiet_s > 0 else []
        if not tiers and not quiet:
            return None
        changes = metrics.idle_partitions()
        if quiet:
            log.info("%s: an input without a record for %g s is left out of the fetches until its end moves "
                     "(checked every %g s meanwhile)", self.name, quiet_s, QUIET_CHECK_INTERVAL_S)
        return IdlePartitions(tiers, self._holds_due, self._consumer_calls, self.stats, self._list_ends,
                              lambda change: changes.labels(self.name, change).inc(), quiet=quiet, quiet_s=quiet_s)

    def _list_ends(self, tps: list[TP]) -> dict[TopicPartition, Any]:
        """ListOffsets "latest" for ``tps``: a future each (runtime/idle_partitions.py's check)."""
        assert self._admin is not None
        latest = OffsetSpec.latest()
        asked = {TopicPartition(t, p): latest for t, p in tps}
        return self._admin.list_offsets(asked, request_timeout=LIST_ENDS_TIMEOUT_S)

    def _pump_deliveries(self) -> None:
        """Serve the producer's delivery reports on this loop's thread from now on (made
        here, on that thread: a worker's loop keeps its pumps in its selector)."""
        producer = self._producer
        assert isinstance(producer, PumpedProducer) and self._loop is not None
        self._pump = DeliveryPump(producer, self._loop, self._loop_thread, self._checkpoints.all_delivered,
                                  name=self.name)
        producer.pump_with(self._pump)

    def _poll_batch(self) -> list[Message]:
        consumer = self._consumer
        assert consumer is not None
        self._consumer_calls.run(consumer)
        self._revoked_in_poll.clear()
        idle = self._idle
        # While a check of paused ends is in flight (a millisecond or two), a short poll lets the
        # loop take its answers at once: with every partition paused, poll waits its whole timeout.
        first = consumer.poll(CHECKING_POLL_S if idle is not None and idle.checking else POLL_S)
        if first is None:
            return []
        batch = [first, *consumer.consume(499, 0)]
        if self._revoked_in_poll and self._idle is not None:
            # An end of a partition revoked in this poll (and maybe given back in it) may have been
            # taken from the queue before the revoke: the end of its former fetch, past the
            # committed offset a new fetch starts from, where a pause would strand the records
            # between (runtime/idle_partitions.py). Its next end is lost too (librdkafka reports
            # an end once), which only leaves the partition fetched. A partition only assigned
            # in this poll keeps its end: librdkafka drops what a former fetch left queued (the
            # revoke bumped its version), so the end is its new fetch's.
            batch = [msg for msg in batch if not (_is_end(msg) and (msg.topic(), msg.partition()) in self._revoked_in_poll)]
        return batch

    async def _handle(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: consumer error: %s", self.name, err)
            elif self._idle is not None:  # the end of a partition (enable.partition.eof)
                self._idle.at_end((msg.topic(), msg.partition()), msg.offset())
            return
        topic = msg.topic()
        partition = msg.partition()
        offset = msg.offset()
        tp = (topic, partition)
        if self._holds_due.is_held(tp):
            return  # behind a record that is not due yet; fetched again after the resume
        tracker = self._offsets.get(tp)
        if tracker is None or tracker.already_seen(offset):
            # Fetched before a rebalance: the partition is gone, or it came back and its
            # fetch restarted from the committed offset, so this record is handled once.
            return
        headers = msg.headers()
        ctx = MessageContext(topic, partition, offset, msg.key(), tuple(headers) if headers else (), msg.timestamp()[1])
        binding = self._bindings[topic]
        due_header = binding.due_header
        if due_header is not None and self._holds_due.hold_if_not_due(due_header, ctx, self._loop):  # type: ignore[arg-type]
            if self._idle is not None:
                self._idle.rewound(tp, offset)
            return
        if self._idle is not None:
            self._idle.handled(tp, offset)
        token = current_context.set(ctx)
        try:
            value = msg.value()
            decoded = binding.decode(value if value is not None else b"")
            with Handling(self.name, self.group_id, ctx, decoded):  # log fields, CONSUMER span
                await binding.handler(decoded, ctx)
            self.stats.processed += 1
        except Exception as exc:
            self.stats.failed += 1
            self._report(HandlerError(ctx.where, exc))
        finally:
            current_context.reset(token)
        tracker.seen(offset)

    def _report(self, error: HandlerError) -> None:
        kind = type(error.cause).__name__
        self.stats.failures_by_type[kind] = self.stats.failures_by_type.get(kind, 0) + 1
        log.error("%s: %s", self.name, error)

    # -- rebalancing ---------------------------------------------------------------------
    def _on_loop(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the event loop and wait for its result (from the poll thread)."""
        loop = self._loop
        assert loop is not None
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise ProcessorError("Kafka callbacks must not run on the event loop thread (it would deadlock).")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _assign_callback(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._holds_due.resume_assigned(consumer, partitions)
        # Live and not ready until the partitions are fetched from their committed offsets:
        # their restore, then the coordinator's answer (one "restore" in the health's count).
        self.health.restore_started()
        try:
            self._on_loop(self._assigned([(p.topic, p.partition) for p in partitions]))
            if not self._stopping:  # else close() turns any assignment into none: the binding's own will do
                assign_from_committed(consumer, partitions, self._protocol, should_stop=lambda: self._stopping)
        finally:
            self.health.restore_finished()

    def _revoke_callback(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked_in_poll.update((p.topic, p.partition) for p in partitions)
        tps = [(p.topic, p.partition) for p in partitions]
        # Let spawned work reach a safe point first (it polls draining()), then flush and
        # commit before letting go, so the next owner starts where we stopped. A checkpoint
        # running beside the polls is committed first: its flush holds the stores.
        self._on_loop(self._drain(tps))
        self._checkpoints.commit_before_revocation()
        self._on_loop(self._revoked(tps, lost=False))

    async def _drain(self, tps: list[TP]) -> None:
        self._draining.update(tps)
        tasks = self._spawned.of(tps)
        if tasks:
            await asyncio.wait(tasks, timeout=self.shutdown_grace)

    def draining(self, topic: str, partition: int) -> bool:
        """True while the partition is being given up or the processor is stopping:
        spawned work should stop at its next safe point (its progress is checkpointed)."""
        return self._stopping or (topic, partition) in self._draining

    def _lost_callback(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked_in_poll.update((p.topic, p.partition) for p in partitions)
        self._checkpoints.abort_before_loss()
        self._on_loop(self._revoked([(p.topic, p.partition) for p in partitions], lost=True))

    async def _assigned(self, tps: list[TP]) -> None:
        # Co-partitioned inputs move together (the range assignor), yet a callback may name
        # only some inputs of a partition (the KIP-848 client assigns a topic once it knows
        # its metadata): a partition's stores are restored when its first input comes, and
        # the hooks get it once every input of it is here (they spawn work on its input
        # topic), and once only while it stays (a second run would resume in-flight work twice).
        partitions = sorted({p for _, p in tps} - self.assigned_partitions())
        targets: dict[TP, PartitionStore] = {}
        for table in self.tables.values():
            for partition in partitions:
                if partition not in table.stores:
                    path = self.state_dir / self.group_id / table.name / str(partition)
                    table.stores[partition] = PartitionStore(path)
                targets[(table.changelog_topic, partition)] = table.stores[partition]
        assert self._reader is not None
        started = time.monotonic()
        self.health.restore_started()  # not ready until restored and the hooks resumed their work
        try:
            try:
                reports = await asyncio.get_running_loop().run_in_executor(None, self._restore, targets)
            except RestoreInterrupted as exc:
                # Not taken: nothing of these partitions is processed, and the consumer's close
                # gives them back. The stores keep what was restored, with its offsets.
                log.info("%s: stopping: %s; %s not taken", self.name, exc, ", ".join(f"{t}[{p}]" for t, p in tps))
                return
            metrics.restore_seconds().labels(self.name).observe(time.monotonic() - started)
            metrics.rebalances().labels(self.name, "assigned").inc()
            self.stats.restored_records += sum(r.records for r in reports)
            for tp in tps:
                self._offsets.setdefault(tp, PartitionOffsets())
            complete = self._complete_partitions({p for _, p in tps})
            if self._idle is not None:
                self._idle.assigned(tps)
            self._last_activity = time.monotonic()
            for hook in self._assign_hooks if complete else ():
                await hook(complete)
        finally:
            self.health.restore_finished()
        log.info("%s: assigned %s", self.name, ", ".join(f"{t}[{p}]" for t, p in tps) or "nothing")

    def _restore(self, targets: dict[TP, PartitionStore]) -> list[RestoreReport]:
        assert self._reader is not None
        if self._stopping:
            raise RestoreInterrupted("a stop was requested before the restore began")
        return restore(self._reader, targets, partial(watermarks, self.bootstrap), should_stop=lambda: self._stopping)

    def _complete_partitions(self, named: set[int]) -> list[int]:
        """Those of ``named`` whose every input is assigned now and that the hooks have not had."""
        complete = sorted(p for p in named - self._hooked if all((topic, p) in self._offsets for topic in self._bindings))
        self._hooked.update(complete)
        return complete

    async def _revoked(self, tps: list[TP], *, lost: bool) -> None:
        await self._spawned.cancel(tps)
        metrics.rebalances().labels(self.name, "lost" if lost else "revoked").inc()
        self._checkpoints.forget(tps)
        for tp in tps:
            self._offsets.pop(tp, None)
            self._draining.discard(tp)
            self._holds_due.forget(tp)
        if self._idle is not None:
            self._idle.revoked(tps)
        self._retention.forget([partition for _, partition in tps])
        still_owned = {p for _, p in self._offsets}
        self._hooked &= still_owned  # given back whole, a partition is the hooks' again
        for table in self.tables.values():
            for partition in [p for p in table.stores if p not in still_owned]:
                table.stores.pop(partition).close()
        log.info("%s: %s %s", self.name, "lost" if lost else "revoked", ", ".join(f"{t}[{p}]" for t, p in tps) or "nothing")

    # -- shutdown ------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Wait for the spawned work, checkpoint, close. Each step that awaits sits in a try
        whose finally runs the steps after it: a second cancel (a second Ctrl-C) skips the
        step it lands in (the checkpoint: the next owner repeats what it did not commit),
        never the closing of the clients, the stores and the pump."""
        self._loop_lag.stop()  # first: whatever below raises, no timer outlives run()
        try:
            pending = self._spawned.pending()
            if pending and not self._checkpoints.failed:
                await asyncio.wait(pending, timeout=self.shutdown_grace)
            await self._checkpoints.end_running()
            await self._checkpoints.at_shutdown()
        finally:
            await self._close_consumer()

    async def _close_consumer(self) -> None:
        try:
            if self._consumer is not None:
                # close() revokes the assignment, which runs _revoked() on this loop.
                await self._poller.run(self._consumer.close)
        finally:
            for table in self.tables.values():
                for store in table.stores.values():
                    store.close()
                table.stores.clear()
            if self._reader is not None:
                self._reader.close()
            await self._close_producer()

    async def _close_producer(self) -> None:
        try:
            if self._producer is not None and not self._checkpoints.failed:
                # The loop serves them meanwhile (its pump): waited for on another thread.
                await asyncio.get_running_loop().run_in_executor(None, self._checkpoints.wait_delivered, self._producer)
        finally:
            # A cancelled await leaves its thread waiting: with the pump closed nothing
            # would serve the reports it waits for, and the loop's shutdown would wait for
            # that thread the whole flush_timeout.
            self._checkpoints.stop_waiting()
            if self._pump is not None:
                self._pump.close()
            for hook in self._stop_hooks:
                hook()
            self._closing.set()
            self.health.stopped()
            self._poller.close()
            log.info("%s: stopped after %d records (%d failed)", self.name, self.stats.processed, self.stats.failed)

    def _require_producer(self) -> PumpedProducer:
        if self._producer is None:
            raise ProcessorError(f"Processor {self.name!r} is not running; send() works inside run().")
        return self._producer
