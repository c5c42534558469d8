"""The gateway's Kafka-native materialized view: a reader of the pipeline's topics that
folds every record into the RocksDB view (``view_store``), in a thread of its own.

Like a global table, each replica reads every partition of the tasks, task-events,
results, approvals and approval-decisions topics from the beginning, group-less (no
consumer group, nothing committed): replicas share nothing and any of them answers for
any task. The view is ready once it has read up to the end offsets the topics had when
it started; from then on it follows them, and wakes whoever waits for news (SSE streams).

A task's result and its progress events are on different topics, and in a burst the
reader can be seconds behind on task-events while results are read at once. So the reader
counts its rounds (one consume and its write batch each) and remembers the last round after
which it had read every task-events partition up to the high watermark of that partition's
latest fetch response: a stream that saw its result in round r has every event produced
before the result once that mark passes r (``events_settled_after``; stream_gate.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from agentstream.approvals.records import refused_decision
from agentstream.clients import reader_config
from agentstream.events import APPROVAL_DECISION, APPROVAL_REQUESTED, TASK_EVENT, TASK_RESULT, TASK_SUBMITTED
from agentstream.gateway import task_view, view_rules
from agentstream.gateway.view_store import ViewBatch, ViewStore, approval_key, event_key, task_key
from agentstream.runtime.lag import end_offsets
from agentstream.serde import SchemaSet, SerdeError
from agentstream.topology import Topology

log = logging.getLogger(__name__)

# The topology's logical topics the view reads.
VIEW_TOPICS = ("tasks", "task_events", "results", "approvals", "approval_decisions")
_BATCH = 1000  # records per consume: one RocksDB write batch each
_POLL_S = 0.1


def fold(batch: ViewBatch, schema: str, record: dict[str, Any], offset: int) -> None:
    """Apply one decoded record (read at ``offset`` of its topic) to the view."""
    if schema == TASK_SUBMITTED:
        key = task_key(record["task_id"])
        batch.put(key, task_view.on_submitted(batch.get(key), record))
    elif schema == TASK_EVENT:
        key = task_key(record["task_id"])
        batch.put(key, task_view.on_event(batch.get(key), record, offset))
        batch.put(event_key(record["task_id"], offset), record)
        _fold_refusal(batch, record)
    elif schema == TASK_RESULT:
        key = task_key(record["task_id"])
        batch.put(key, task_view.on_result(batch.get(key), record, offset))
    elif schema == APPROVAL_REQUESTED:
        key = approval_key(record["approval_id"])
        batch.put(key, view_rules.on_request(batch.get(key), record))
    elif schema == APPROVAL_DECISION:
        key = approval_key(record["approval_id"])
        batch.put(key, view_rules.on_decision(batch.get(key), offset))


def _fold_refusal(batch: ViewBatch, event: dict[str, Any]) -> None:
    """Reopen the approval whose decision the event says its agent refused (the call waits)."""
    refused = refused_decision(event["detail"]) if event["kind"] == "ERROR" else None
    if refused is None:
        return
    key = approval_key(refused[0])
    entry = view_rules.on_refusal(batch.get(key), event["task_id"], refused[1])
    if entry is not None:
        batch.put(key, entry)


class ViewReader:
    """Reads the view's topics into ``store`` until ``stop``; ``on_change`` is called (from
    the reader's thread) after every batch that changed the view, with the ids of the tasks
    it changed (None once the view has caught up: everything may have)."""

    def __init__(self, bootstrap: str, topology: Topology, schemas: SchemaSet, store: ViewStore,
                 on_change: Callable[[frozenset[str] | None], None]) -> None:
        self._bootstrap = bootstrap
        # An app without human approval declares no approvals topics: its view has none.
        self._topics = [topology.topic(name) for name in VIEW_TOPICS if topology.declares(name)]
        self._schemas = schemas
        self._store = store
        self._on_change = on_change
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-view", daemon=True)
        self._events_topic = topology.topic("task_events")
        self.rounds = 0  # consume rounds done; a stream reads it when it first sees its result
        self._settled_round = -1  # the last round after which task-events was read to its ends
        self.records = 0
        self.skipped = 0
        self.failure: str | None = None  # why the reader stopped on its own

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def events_settled_after(self, round_seen: int) -> bool:
        """Whether task-events was read to its ends in a round after ``round_seen``: then every
        task event produced before a record the view had in round ``round_seen`` is in."""
        return self._settled_round > round_seen

    def start(self) -> ViewReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _run(self) -> None:
        try:
            self._read()
        except Exception as exc:  # the process stays up to say so on /healthz
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the gateway's view reader stopped")

    def _read(self) -> None:
        ends = end_offsets(self._bootstrap, self._topics)
        behind = {tp for tp, end in ends.items() if end > 0}
        consumer = Consumer(reader_config(self._bootstrap))
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in ends])
        events = [TopicPartition(topic, partition) for topic, partition in ends if topic == self._events_topic]
        eof: dict[tuple[str, int], int] = {}
        try:
            self._mark_ready_if(behind)
            while not self._stopping.is_set():
                messages = consumer.consume(_BATCH, _POLL_S)
                batch = self._store.batch()
                changed: set[str] = set()
                for msg in messages:
                    self._take(msg, batch, behind, ends, changed, eof)
                if len(batch):
                    batch.commit()
                    self._on_change(frozenset(changed))
                self.rounds += 1
                if _read_to_ends(consumer, events, eof):
                    self._settled_round = self.rounds
                self._mark_ready_if(behind)
        finally:
            consumer.close()

    def _take(self, msg: Message, batch: ViewBatch, behind: set[tuple[str, int]], ends: dict[tuple[str, int], int],
              changed: set[str], eof: dict[tuple[str, int], int]) -> None:
        tp = (str(msg.topic()), int(msg.partition() or 0))
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                behind.discard(tp)  # reached the end (also past a compaction gap)
                eof[tp] = int(msg.offset() or 0)
            else:
                log.warning("view reader: consumer error on %s[%d]: %s", tp[0], tp[1], err.str())
            return
        offset = int(msg.offset() or 0)
        if offset + 1 >= ends.get(tp, 0):
            behind.discard(tp)
        value = msg.value()
        if value is None:
            return
        try:
            schema, record = self._schemas.decode(value)
        except SerdeError as exc:
            self.skipped += 1
            log.warning("view reader: skipped %s[%d]@%d: %s", tp[0], tp[1], offset, exc)
            return
        fold(batch, schema, record, offset)
        if isinstance(record.get("task_id"), str):
            changed.add(record["task_id"])
        self.records += 1

    def _mark_ready_if(self, behind: set[tuple[str, int]]) -> None:
        if not behind and not self._ready.is_set():
            log.info("gateway view caught up: %d records read from %d topics", self.records, len(self._topics))
            self._ready.set()
            self._on_change(None)


def _read_to_ends(consumer: Consumer, partitions: list[TopicPartition], eof: dict[tuple[str, int], int]) -> bool:
    """Whether every partition was read up to the high watermark of its latest fetch response
    (librdkafka's cached one: no broker request). A partition whose fetches stopped because
    its queue is full has unread records queued, so its position is below that mark too.
    Where nothing was consumed yet, the partition-EOF offset stands for the position."""
    for tp in consumer.position(partitions):
        low, high = consumer.get_watermark_offsets(tp, cached=True)
        at = max(tp.offset, eof.get((tp.topic, tp.partition), -1))
        if high < 0 or (at < high and high > low):
            return False
    return True
