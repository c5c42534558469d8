"""The tenant ledger as a Kafka-native global table: every router replica reads every
partition of the tasks and results topics (no consumer group) into its own RocksDB copy
of the ledger (ledger.py), like a Kafka Streams GlobalKTable whose changelog is the source
topics themselves. A tenant's sessions spread over all partitions and replicas, so a count
per partition could never be a tenant-wide cap; each replica's copy sees them all.

The copy lags the topics by a fetch or two (tens of milliseconds): tasks of one tenant
submitted within that window on different partitions can each start without seeing the
other, so a cap can be passed by about the tasks the tenant submits in that time (README
"Tenants"). The read positions are stored with the ledger in one write batch, so a restart
resumes where the copy stopped and counts nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from agentstream import metrics
from agentstream.clients import reader_config
from agentstream.events import TASK_RESULT, TASK_SUBMITTED, now_ms
from agentstream.runtime.store import PartitionStore
from agentstream.serde import SchemaSet, SerdeError
from agentstream.tenancy.admission import Refusal, TenantLookup, refusal
from agentstream.tenancy.ledger import TenantLedger, countable, utc_day
from agentstream.topology import Topology

log = logging.getLogger(__name__)

POSITION = b"pos/"  # pos/<topic>\x1f<partition> -> the next offset to read
BATCH = 500
POLL_S = 0.05
PRUNE_EVERY_S = 3600.0
RESTART_S = 5.0
ROUTER = "router"  # the agent whose input holds the submitted tasks
WATERMARK_TIMEOUT_S = 10.0
TP = tuple[str, int]


class _CatchUp:
    """A wait for the reader to pass the end offsets every partition had when it began."""

    def __init__(self) -> None:
        self.marks: dict[TP, int] | None = None  # set by the reader thread (it owns the consumer)
        self.done = threading.Event()


class LedgerReader:
    """Keeps a TenantLedger current from the tasks and results topics, in a thread."""

    def __init__(self, bootstrap: str, topics: Mapping[str, str], schemas: SchemaSet, path: Path,
                 observed: Iterable[str] = ()) -> None:
        """``topics``: the schema name each topic holds (TaskSubmitted, TaskResult);
        ``observed``: the tenants whose figures the metrics show."""
        self._bootstrap = bootstrap
        self._topics = dict(topics)
        self._schemas = schemas
        self._path = path
        self._store = PartitionStore(path)
        self._lock = threading.Lock()  # the ledger and the waits: written by the reader, read by the router
        self.ledger = TenantLedger(self._store)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._positions: dict[TP, int] = {}  # the next offset to read, as far as the reader knows
        self._waits: list[_CatchUp] = []
        self._observed = tuple(observed)

    @classmethod
    def for_topology(cls, bootstrap: str, topology: Topology, schemas: SchemaSet, path: Path,
                     observed: Iterable[str] = ()) -> LedgerReader:
        """A reader of the topology's tasks and results topics, its store at ``path`` (a
        directory of its own: the router's is ``<state>/router/<group>/tenant-ledger``)."""
        topics = {topology.topic(topology.agent(ROUTER).input): TASK_SUBMITTED, topology.topic("results"): TASK_RESULT}
        return cls(bootstrap, topics, schemas, path, observed)

    def start(self) -> None:
        """Start reading (in a thread of its own); ``wait_caught_up`` tells when it has read
        what the topics held."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tenant-ledger", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._store.close()

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until the ledger holds everything written to the topics before this call
        (True), or ``timeout`` seconds passed (False)."""
        wait = _CatchUp()
        with self._lock:
            self._waits.append(wait)
        return wait.done.wait(timeout)

    def refusal(self, tenants: TenantLookup, task: Mapping[str, Any]) -> Refusal | None:
        """admission.refusal on the ledger as it stands."""
        with self._lock:
            return refusal(tenants, self.ledger, task, now_ms())

    def spent_today(self, tenant: str) -> float:
        """The tenant's spend this UTC day, as read so far."""
        with self._lock:
            return self.ledger.spent(tenant, utc_day(now_ms()))

    def in_flight(self, tenant: str) -> int:
        """The tenant's tasks submitted and not yet answered, as read so far."""
        with self._lock:
            return self.ledger.in_flight(tenant)

    # -- the reader thread -------------------------------------------------------------------
    def _run(self) -> None:
        """Read until stopped; after a failure (the broker gone a while, say) start again from
        the stored positions with the stored ledger, so nothing is counted twice."""
        while not self._stop.is_set():
            try:
                self._read()
            except Exception:
                log.exception("tenant ledger: the reader failed; starting again from the stored positions in %.0f s",
                              RESTART_S)
                with self._lock:
                    self._store.close()
                    self._store = PartitionStore(self._path)  # unpersisted writes are dropped with the old one
                    self.ledger = TenantLedger(self._store)
                    self._positions.clear()
                self._stop.wait(RESTART_S)

    def _read(self) -> None:
        consumer = Consumer(reader_config(self._bootstrap))
        try:
            assignment = self._assignment(consumer)
            consumer.assign(assignment)
            with self._lock:
                self._show()  # the stored figures, before anything new is read
            pruned = 0.0
            while not self._stop.is_set():
                messages = consumer.consume(BATCH, POLL_S)
                if time.monotonic() - pruned >= PRUNE_EVERY_S:
                    self.ledger.prune_marks(now_ms())  # a scan of the store only: the router's reads go on
                    pruned = time.monotonic()
                self._mark_waits(consumer, assignment)
                with self._lock:
                    self._apply(messages)
                    if messages:
                        self.ledger.prune_days(now_ms())
                        self._show()
                    self._persist()
                    self._release_waits()
        finally:
            consumer.close()

    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        assignment = []
        for topic in self._topics:
            for partition in sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions):
                stored = self._store.get(_position_key(topic, partition))
                if stored is not None:
                    self._positions[(topic, partition)] = int(stored)
                assignment.append(TopicPartition(topic, partition, int(stored) if stored is not None else OFFSET_BEGINNING))
        log.info("tenant ledger: reading %s from the stored positions", ", ".join(self._topics))
        return assignment

    def _mark_waits(self, consumer: Consumer, assignment: list[TopicPartition]) -> None:
        """Give each new wait the end offsets of every partition, asked now (after the wait began)."""
        with self._lock:
            new = [wait for wait in self._waits if wait.marks is None]
        if not new:
            return
        marks = {}
        for tp in assignment:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), WATERMARK_TIMEOUT_S, cached=False)
            marks[(tp.topic, tp.partition)] = high
        for wait in new:
            wait.marks = marks

    def _apply(self, messages: list[Message]) -> None:
        for message in messages:
            where = (message.topic(), message.partition())
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._positions[where] = max(self._positions.get(where, 0), message.offset())
                else:
                    log.warning("tenant ledger: %s[%s]: %s", where[0], where[1], error)
                continue
            self._take(self._topics[where[0]], message.value())
            self._positions[where] = message.offset() + 1
            self._store.put(_position_key(*where), str(message.offset() + 1).encode())

    def _take(self, schema: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = self._schemas.decode_as(schema, value)
        except SerdeError:
            return  # not a task or result: the router dead-letters such bytes; nothing to count
        if not countable(record):
            return  # the router rejects it as invalid
        feed: Callable[[Mapping[str, Any]], None] = self.ledger.submitted if schema == TASK_SUBMITTED else self.ledger.answered
        feed(record)

    def _show(self) -> None:
        today = utc_day(now_ms())
        for tenant in self._observed:
            metrics.tenant_ledger(tenant, self.ledger.spent(tenant, today), self.ledger.in_flight(tenant))

    def _persist(self) -> None:
        if self._store.dirty:
            self._store.begin_flush()
            self._store.finish_flush(None)  # the ledger and its positions in one write batch
        self._store.flush_if_older()  # on disk within a minute: a kill -9 resumes from there (runtime/store.py)

    def _release_waits(self) -> None:
        for wait in [w for w in self._waits if w.marks is not None]:
            if all(self._positions.get(tp, -1) >= end for tp, end in wait.marks.items()):  # type: ignore[union-attr]
                wait.done.set()
                self._waits.remove(wait)


def _position_key(topic: str, partition: int) -> bytes:
    return POSITION + f"{topic}\x1f{partition}".encode()
