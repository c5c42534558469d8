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

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from agentstream import metrics
from agentstream.clients import reader_config
from agentstream.events import TASK_RESULT, TASK_SUBMITTED, now_ms
from agentstream.runtime.store import PartitionStore
from agentstream.serde import SchemaSet, SerdeError
from agentstream.tenancy.admission import Refusal, TenantLookup, refusal
from agentstream.tenancy.ledger import TenantLedger, utc_day

log = logging.getLogger(__name__)

POSITION = b"pos/"  # pos/<topic>\x1f<partition> -> the next offset to read
BATCH = 500
POLL_S = 0.05
PRUNE_EVERY_S = 3600.0


class _CatchUp:
    """A wait for the reader to reach the end of every partition, from a read that began
    after the wait did (so what was written before it is in)."""

    def __init__(self, round_now: int) -> None:
        self.after_round = round_now
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
        self._store = PartitionStore(path)
        self._lock = threading.Lock()  # the ledger: written by the reader, read by the router's handler
        self.ledger = TenantLedger(self._store)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._at_end: set[tuple[str, int]] = set()
        self._partitions: set[tuple[str, int]] = set()
        self._round = 0
        self._waits: list[_CatchUp] = []
        self._observed = tuple(observed)

    def start(self) -> None:
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
        with self._lock:
            wait = _CatchUp(self._round)
            self._waits.append(wait)
        return wait.done.wait(timeout)

    def refusal(self, tenants: TenantLookup, task: Mapping[str, Any]) -> Refusal | None:
        """admission.refusal on the ledger as it stands."""
        with self._lock:
            return refusal(tenants, self.ledger, task, now_ms())

    # -- the reader thread -------------------------------------------------------------------
    def _run(self) -> None:
        consumer = Consumer(reader_config(self._bootstrap))
        try:
            consumer.assign(self._assignment(consumer))
            pruned = 0.0
            while not self._stop.is_set():
                messages = consumer.consume(BATCH, POLL_S)
                with self._lock:
                    self._apply(messages)
                    if messages:
                        self._show()
                    if time.monotonic() - pruned >= PRUNE_EVERY_S:
                        self.ledger.prune(now_ms())
                        pruned = time.monotonic()
                    self._persist()
                    self._release_waits()
        except Exception:
            log.exception("tenant ledger: the reader stopped; tenant limits are no longer current")
            raise
        finally:
            consumer.close()

    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        assignment = []
        for topic in self._topics:
            for partition in sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions):
                stored = self._store.get(_position_key(topic, partition))
                self._partitions.add((topic, partition))
                assignment.append(TopicPartition(topic, partition, int(stored) if stored is not None else -2))  # -2: beginning
        log.info("tenant ledger: reading %s from the stored positions", ", ".join(self._topics))
        return assignment

    def _apply(self, messages: list[Message]) -> None:
        for message in messages:
            where = (message.topic(), message.partition())
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(where)
                else:
                    log.warning("tenant ledger: %s[%s]: %s", where[0], where[1], error)
                continue
            self._at_end.discard(where)
            self._take(self._topics[where[0]], message.value())
            self._store.put(_position_key(*where), str(message.offset() + 1).encode())
        self._round += 1

    def _take(self, schema: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = self._schemas.decode_as(schema, value)
        except SerdeError:
            return  # not a task or result: the router dead-letters such bytes; nothing to count
        if not (record.get("tenant_id") and record.get("task_id")):
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

    def _release_waits(self) -> None:
        if not self._partitions <= self._at_end:
            return
        for wait in [w for w in self._waits if w.after_round < self._round - 1]:
            wait.done.set()
            self._waits.remove(wait)


def _position_key(topic: str, partition: int) -> bytes:
    return POSITION + f"{topic}\x1f{partition}".encode()


def ledger_topics(tasks_topic: str, results_topic: str) -> dict[str, str]:
    return {tasks_topic: TASK_SUBMITTED, results_topic: TASK_RESULT}
