"""Talking to a running pipeline from outside: submit tasks, follow results and events."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from agentstream.blocking_send import ACK_TIMEOUT_S, Delivery, acknowledged, producer_settings
from agentstream.broker_refusal import refused_for_good
from agentstream.clients import admin_config, producer_config, reader_config
from agentstream.errors import AgentStreamError, ConfigurationError, SubmitError
from agentstream.events import TASK_SUBMITTED, now_ms
from agentstream.runtime.errors import CheckpointError, ProcessorError
from agentstream.runtime.lag import end_offsets
from agentstream.runtime.topics import require_topics
from agentstream.serde import SchemaSet, SerdeError
from agentstream.telemetry import tracing
from agentstream.topology import Topology

log = logging.getLogger(__name__)

Record = tuple[str, str, dict[str, Any]]  # (topic, schema name, decoded record)


class SkippedRecordError(AgentStreamError):
    """A strict Follower met a record it cannot decode, or a consumer error."""


def new_task(
    text: str,
    session_id: str,
    tenant_id: str = "default",
    *,
    task_id: str | None = None,
    requested_agent: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "task_id": task_id or f"task-{uuid.uuid4().hex[:12]}",
        "session_id": session_id,
        "tenant_id": tenant_id,
        "input": text,
        "submitted_at": now_ms(),
        "requested_agent": requested_agent,
        "metadata": metadata or {},
        "budget_usd": None,
    }


class Submitter:
    """Produces TaskSubmitted records to the tasks topic, keyed by session.

    The topic must exist: producing to a missing topic would make a broker that
    auto-creates topics create it with its own default partition count, and the
    topology could never be applied on that cluster afterwards.
    """

    def __init__(self, bootstrap: str, topology: Topology, schemas: SchemaSet) -> None:
        self._bootstrap = bootstrap
        self._topic = topology.topic("tasks")
        self._agent_types = topology.specialist_types
        require_topics(AdminClient(admin_config(bootstrap)), [self._topic], bootstrap)
        self._producer = Producer(producer_config(bootstrap, producer_settings()))  # gives a record up in 30 s
        self._schemas = schemas
        self._unflushed: list[Delivery] = []  # the deliveries of tasks sent since the last flush()
        self._lock = threading.Lock()  # the Kafka client submits from several threads (AsyncClient)

    def submit(self, task: dict[str, Any]) -> Delivery:
        """Send ``task``; its delivery, for flush()."""
        agent = task.get("requested_agent")
        if agent and agent not in self._agent_types:
            raise ConfigurationError(
                f"Unknown agent type {agent!r}; the topology's specialist types are {', '.join(self._agent_types)}."
            )
        # The task's record starts its trace (or continues the caller's current one): the
        # router's span of it is the child of this PRODUCER span.
        with tracing.producing(self._topic, None, None) as traced:
            delivery = Delivery()
            self._producer.produce(self._topic, self._schemas.encode(TASK_SUBMITTED, task), task["session_id"],
                                   on_delivery=delivery.report, headers=traced.headers)
        with self._lock:
            self._unflushed.append(delivery)
        return delivery

    def flush(self, timeout: float = ACK_TIMEOUT_S, deliveries: Sequence[Delivery] | None = None) -> None:
        """Wait until the broker has every task sent since the last flush (or ``deliveries``:
        the caller's own, when several threads submit); SubmitError if one was refused or
        not acknowledged in time."""
        with self._lock:
            if deliveries is None:
                deliveries, self._unflushed = self._unflushed, []
            else:
                self._unflushed = [d for d in self._unflushed if d not in deliveries]
        try:
            acknowledged(self._producer, deliveries, timeout, f"task(s) sent to {self._bootstrap}")
        except CheckpointError as exc:
            if refused_for_good(exc):
                raise SubmitError(f"{exc}; the broker refused it for good: submitting again will not help until the "
                                  "cause is fixed.") from exc
            raise SubmitError(f"{exc}; nothing is lost by submitting again with the same --task-id (duplicates "
                              "get one result).") from exc


class Follower:
    """Reads decoded records of some topics from given offsets (group-less, never commits).

    It starts at the end of every partition, at the beginning (``from_beginning``), or
    ``last`` records before the end of each partition. A record it cannot decode and a
    consumer error are counted (``skipped``, ``errors``) and logged with
    ``topic[partition]@offset``; with ``strict`` they raise SkippedRecordError instead.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        schemas: SchemaSet,
        *,
        from_beginning: bool = False,
        last: int = 0,
        strict: bool = False,
    ) -> None:
        self._schemas = schemas
        self._strict = strict
        self.skipped = 0
        self.errors = 0
        self._consumer = Consumer(reader_config(bootstrap, {"enable.partition.eof": False}))
        self._ends = end_offsets(bootstrap, topics)
        self._starts = {
            tp: 0 if from_beginning else max(end - last, 0) for tp, end in self._ends.items()
        }
        self._consumer.assign([TopicPartition(t, p, self._starts[(t, p)]) for t, p in self._ends])

    def backlog(self, timeout: float = 30.0) -> list[Record]:
        """The records between the start offsets and the ends seen when reading began, in the
        order they were written within each partition; ProcessorError if ``timeout`` s pass
        without a record while some partition is still behind."""
        behind = {tp for tp, end in self._ends.items() if self._starts[tp] < end}
        out: list[Record] = []
        quiet_since = time.monotonic()
        while behind:
            msg = self._consumer.poll(0.2)
            if msg is None:
                self._drop_reached(behind)
                if behind and time.monotonic() - quiet_since > timeout:
                    raise ProcessorError(f"Reading {', '.join(f'{t}[{p}]' for t, p in sorted(behind))} to its end "
                                         f"stalled for {timeout:.0f} s; is the broker still there?")
                continue
            quiet_since = time.monotonic()
            record = self._accept(msg)
            if record is not None:
                out.append(record)
            if msg.error() is None:
                tp = (str(msg.topic()), int(msg.partition() or 0))
                if int(msg.offset() or 0) + 1 >= self._ends.get(tp, 0):
                    behind.discard(tp)
        return out

    def _drop_reached(self, behind: set[tuple[str, int]]) -> None:
        """Partitions whose position reached the end without a record there (compaction gaps)."""
        for tp in self._consumer.position([TopicPartition(t, p) for t, p in behind]):
            if tp.offset >= self._ends[(tp.topic, tp.partition)]:
                behind.discard((tp.topic, tp.partition))

    def records(self, timeout: float | None = None) -> Iterator[Record]:
        """Yield records until ``timeout`` s pass with nothing new (forever with None)."""
        quiet_since = time.monotonic()
        while True:
            msg = self._consumer.poll(0.2)
            if msg is None:
                if timeout is not None and time.monotonic() - quiet_since > timeout:
                    return
                continue
            quiet_since = time.monotonic()
            record = self._accept(msg)
            if record is not None:
                yield record

    def poll_once(self, wait: float = 0.2) -> list[Record]:
        """Whatever is there now (waiting up to ``wait`` s for the first record)."""
        out: list[Record] = []
        msg = self._consumer.poll(wait)
        while msg is not None:
            record = self._accept(msg)
            if record is not None:
                out.append(record)
            msg = self._consumer.poll(0)
        return out

    def _accept(self, msg: Message) -> Record | None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise SkippedRecordError(f"fatal consumer error at {_where(msg)}: {err.str()}")
            self.errors += 1
            self._report(f"consumer error at {_where(msg)}: {err.str()}")
            return None
        value = msg.value()
        if value is None:
            self.skipped += 1
            self._report(f"skipped {_where(msg)}: a null value (tombstone), not a record")
            return None
        try:
            name, record = self._schemas.decode(value)
        except SerdeError as exc:
            self.skipped += 1
            self._report(f"skipped {_where(msg)}: not decodable ({type(exc).__name__}: {exc})")
            return None
        return str(msg.topic()), name, record

    def _report(self, text: str) -> None:
        if self._strict:
            raise SkippedRecordError(text)
        log.warning("%s", text)

    def close(self) -> None:
        self._consumer.close()


def _where(msg: Message) -> str:
    """``topic[partition]@offset``, or as much of it as a consumer error carries."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if not topic:
        return "consumer"
    if partition is None or partition < 0:
        return topic
    return f"{topic}[{partition}]@{offset}" if offset is not None and offset >= 0 else f"{topic}[{partition}]"
