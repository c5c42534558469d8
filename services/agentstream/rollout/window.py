"""A group-less reader that follows topics from a point in time: what the report and the
watcher judge (a window of recent results) and what every router reads in full (the
control topic, from the beginning). No consumer group: each reader gets every record
of every partition, which is what a broadcast needs and what a group would prevent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from agentstream.clients import admin_config, reader_config
from agentstream.runtime.errors import ProcessorError
from agentstream.unanswered import asked

_METADATA_TIMEOUT_S = 10.0


class TopicFollower:
    """Every record of ``topics`` written since ``since_ms`` (None: from the beginning), in
    per-partition order, as ``poll`` returns them; ``caught_up`` once each partition's end
    as of the last fetch was reached."""

    def __init__(self, bootstrap: str, topics: Sequence[str], since_ms: int | None = None) -> None:
        self._consumer = Consumer(reader_config(bootstrap, {"group.id": f"agentstream-follow-{uuid.uuid4().hex}"}))
        partitions = _partitions(bootstrap, topics)
        if since_ms is None:
            start = [TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions]
        else:  # the first offset at or after the time; the end (-1) where nothing is that recent
            asked = [TopicPartition(t, p, since_ms) for t, p in partitions]
            start = self._consumer.offsets_for_times(asked, _METADATA_TIMEOUT_S)
        self._consumer.assign(start)
        self._behind = {(tp.topic, tp.partition) for tp in start}

    @property
    def caught_up(self) -> bool:
        return not self._behind

    def poll(self, timeout: float, max_records: int = 500) -> list[Message]:
        """The records that came within ``timeout`` (end-of-partition events are not records)."""
        records: list[Message] = []
        for msg in self._consumer.consume(max_records, timeout):
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                self._behind.discard((msg.topic(), msg.partition()))
            else:
                raise ProcessorError(f"Reading {msg.topic()}[{msg.partition()}] failed: {err}")
        return records

    def catch_up(self, timeout: float) -> list[Message]:
        """Every record up to the ends, or fail naming the topics after ``timeout``."""
        deadline = time.monotonic() + timeout
        records: list[Message] = []
        while not self.caught_up:
            if time.monotonic() > deadline:
                raise ProcessorError(f"Could not read {sorted(self._behind)} to the end within {timeout:.0f} s.")
            records += self.poll(0.2)
        return records

    def close(self) -> None:
        self._consumer.close()


def _partitions(bootstrap: str, topics: Iterable[str]) -> list[tuple[str, int]]:
    admin = AdminClient(admin_config(bootstrap))
    # Asked at a router's start: a broker's blip must not end it (unanswered.py).
    metadata = asked(lambda: admin.list_topics(timeout=_METADATA_TIMEOUT_S), call="Metadata",
                     purpose=f"Could not list the topics of the cluster at {bootstrap}")
    found: list[tuple[str, int]] = []
    for topic in topics:
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise ProcessorError(f"Topic {topic} does not exist; create the topology's topics (`agentstream topology apply`).")
        found += [(topic, p) for p in sorted(described.partitions)]
    return found
