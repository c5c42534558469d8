"""Consumer lag that is right on Apache Kafka and on the embedded Tansu broker.

The end of each partition comes from the high watermark of a real fetch (the
partition-EOF event), not from ListOffsets, which Tansu answers with the first offset
of the last batch plus one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition

from agentstream.clients import reader_config
from agentstream.runtime.errors import ProcessorError


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


def end_offsets(bootstrap: str, topics: Sequence[str], timeout: float = 30.0) -> dict[tuple[str, int], int]:
    """The true end offset (high watermark) of every partition of ``topics``."""
    reader = Consumer(reader_config(bootstrap, {"group.id": f"agentstream-lag-{uuid.uuid4().hex}"}))
    try:
        metadata = reader.list_topics(timeout=timeout)
        partitions: list[TopicPartition] = []
        for topic in topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise ProcessorError(f"Topic {topic!r} does not exist on {bootstrap}.")
            partitions += [TopicPartition(topic, p, OFFSET_END) for p in sorted(meta.partitions)]
        reader.assign(partitions)
        ends: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout
        while len(ends) < len(partitions):
            if time.monotonic() > deadline:
                raise ProcessorError(f"No fetch answered for {len(partitions) - len(ends)} partitions within {timeout:.0f} s.")
            msg = reader.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                ends[(msg.topic(), msg.partition())] = msg.offset()
            elif err is not None:
                raise ProcessorError(f"Fetching {msg.topic()}[{msg.partition()}] failed: {err}")
        return ends
    finally:
        reader.close()


def consumer_lag(bootstrap: str, group: str, topics: Sequence[str], timeout: float = 30.0) -> list[PartitionLag]:
    """Committed offset, true end offset and lag of ``group`` on every partition of ``topics``."""
    ends = end_offsets(bootstrap, topics, timeout)
    probe = Consumer(reader_config(bootstrap, {"group.id": group}))
    try:
        committed = probe.committed([TopicPartition(t, p) for t, p in sorted(ends)], timeout=timeout)
    finally:
        probe.close()
    rows = []
    for tp in committed:
        offset = tp.offset if tp.offset >= 0 else None
        rows.append(PartitionLag(group, tp.topic, tp.partition, offset, ends[(tp.topic, tp.partition)]))
    return rows


@dataclass(frozen=True, slots=True)
class TopicRecord:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    headers: list[tuple[str, bytes | None]]


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> Iterator[TopicRecord]:
    """Every record of every partition of ``topic``, up to the end a fetch reported when
    the read began (group-less; nothing is committed)."""
    ends = end_offsets(bootstrap, [topic], timeout)
    wanted = {tp for tp, end in ends.items() if end > 0}
    if not wanted:
        return
    reader = Consumer(reader_config(bootstrap, {"group.id": f"agentstream-read-{uuid.uuid4().hex}"}))
    reader.assign([TopicPartition(t, p, 0) for t, p in sorted(wanted)])
    deadline = time.monotonic() + timeout
    try:
        while wanted:
            if time.monotonic() > deadline:
                raise ProcessorError(f"Could not read {topic} to its end within {timeout:.0f} s.")
            msg = reader.poll(0.2)
            if msg is None:
                continue
            tp = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise ProcessorError(f"Reading {topic}[{msg.partition()}] failed: {err}")
                if msg.offset() >= ends[tp]:
                    wanted.discard(tp)
                continue
            yield TopicRecord(msg.key(), msg.value(), msg.partition(), msg.offset(), list(msg.headers() or ()))
    finally:
        reader.close()
