"""Talking to a running pipeline from outside: submit tasks, follow results and events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from agentstream.clients import producer_config, reader_config
from agentstream.events import TASK_SUBMITTED, now_ms
from agentstream.runtime.lag import end_offsets
from agentstream.serde import SchemaSet, SerdeError
from agentstream.topology import Topology


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
    """Produces TaskSubmitted records to the tasks topic, keyed by session."""

    def __init__(self, bootstrap: str, topology: Topology, schemas: SchemaSet) -> None:
        self._producer = Producer(producer_config(bootstrap))
        self._topic = topology.topic("tasks")
        self._schemas = schemas
        self._errors: list[str] = []

    def submit(self, task: dict[str, Any]) -> None:
        self._producer.produce(
            self._topic, self._schemas.encode(TASK_SUBMITTED, task), task["session_id"], on_delivery=self._delivered
        )

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining or self._errors:
            raise RuntimeError(f"Submitting failed: {remaining} unsent, errors: {self._errors[:3]}")


class Follower:
    """Reads decoded records of some topics from given offsets (group-less, never commits)."""

    def __init__(self, bootstrap: str, topics: Sequence[str], schemas: SchemaSet, *, from_beginning: bool = False) -> None:
        self._schemas = schemas
        self._consumer = Consumer(reader_config(bootstrap, {"enable.partition.eof": False}))
        ends = end_offsets(bootstrap, topics)
        self._consumer.assign([TopicPartition(t, p, 0 if from_beginning else end) for (t, p), end in ends.items()])

    def records(self, timeout: float | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Yield (topic, schema name, record) until ``timeout`` s pass with nothing new."""
        quiet_since = time.monotonic()
        while True:
            msg = self._consumer.poll(0.2)
            if msg is None:
                if timeout is not None and time.monotonic() - quiet_since > timeout:
                    return
                continue
            if msg.error() is not None or msg.value() is None:
                continue
            quiet_since = time.monotonic()
            try:
                name, record = self._schemas.decode(msg.value())
            except SerdeError:
                continue
            yield msg.topic(), name, record

    def poll_once(self, wait: float = 0.2) -> list[tuple[str, str, dict[str, Any]]]:
        out: list[tuple[str, str, dict[str, Any]]] = []
        msg = self._consumer.poll(wait)
        while msg is not None:
            if msg.error() is None and msg.value() is not None:
                try:
                    name, record = self._schemas.decode(msg.value())
                    out.append((msg.topic(), name, record))
                except SerdeError:
                    pass
            msg = self._consumer.poll(0)
        return out

    def close(self) -> None:
        self._consumer.close()
