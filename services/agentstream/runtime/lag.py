"""Partition ends and consumer lag, right on Apache Kafka and on the embedded Tansu broker.

On Apache Kafka the ends come from ListOffsets, one AdminClient request for every
partition. Tansu answers ListOffsets "latest" with the first offset of the last batch
plus one, so there (and only there, see ``agentstream.broker.is_tansu``) the end of each
partition is the high watermark of a real fetch (librdkafka's partition-EOF event).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from agentstream.broker import is_tansu
from agentstream.clients import admin_config, reader_config
from agentstream.runtime.committed import committed_offsets
from agentstream.runtime.errors import ProcessorError
from agentstream.runtime.topics import require_topics


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


_TP = tuple[str, int]

def group_committed(
    bootstrap: str, group: str, topic: str, partitions: Sequence[int], timeout: float = 30.0,
) -> dict[int, int | None]:
    """``group``'s committed offset of each of ``partitions`` of ``topic`` (None: never
    committed), asked by a probe that does not join the group."""
    probe = Consumer(reader_config(bootstrap, {"group.id": group}))
    try:
        committed = committed_offsets(probe, [TopicPartition(topic, p) for p in partitions], timeout)
    finally:
        probe.close()
    for tp in committed:
        if tp.error is not None:
            raise ProcessorError(
                f"The committed offset of group {group} on {topic}[{tp.partition}] is unknown: {tp.error}")
    return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in committed}


def end_offsets(bootstrap: str, topics: Sequence[str], timeout: float = 30.0) -> dict[_TP, int]:
    """The true end offset (high watermark) of every partition of ``topics``."""
    admin = AdminClient(admin_config(bootstrap, {"log_level": 0}))
    return _ends(admin, bootstrap, _partitions(admin, bootstrap, topics, timeout), timeout)


def watermarks(bootstrap: str, partitions: Sequence[_TP], timeout: float = 30.0) -> dict[_TP, tuple[int, int]]:
    """``(log start, end)`` of each partition: where a full read starts and where it ends."""
    if not partitions:
        return {}
    admin = AdminClient(admin_config(bootstrap, {"log_level": 0}))
    starts = _listed_offsets(admin, partitions, OffsetSpec.earliest(), timeout)
    ends = _ends(admin, bootstrap, partitions, timeout)
    return {tp: (starts[tp], ends[tp]) for tp in partitions}


def _ends(admin: AdminClient, bootstrap: str, partitions: Sequence[_TP], timeout: float) -> dict[_TP, int]:
    """ListOffsets "latest", except on Tansu, where only a fetch's high watermark is right."""
    if is_tansu(bootstrap):
        return _fetched_ends(bootstrap, partitions, timeout)
    return _listed_offsets(admin, partitions, OffsetSpec.latest(), timeout)


def _partitions(admin: AdminClient, bootstrap: str, topics: Sequence[str], timeout: float) -> list[_TP]:
    found = require_topics(admin, topics, bootstrap, timeout)
    return [(topic, p) for topic in topics for p in found[topic]]


# Asked again until the timeout: a partition whose leader is not known yet (the topic was
# just created, or a leader moved), librdkafka's own "Failed to query partition leaders: No
# leaders found" (_NOENT: every partition asked had no leader in its metadata cache, as
# just after a frozen broker was resumed: seen in CI), and a request to a broker that is
# down or was restarted (_TIMED_OUT, _TRANSPORT). And the answers of a leadership change in
# progress, retriable in Kafka's own clients: the asker's leader epoch newer than the
# broker's (UNKNOWN_LEADER_EPOCH: seen in CI after a starved broker stopped answering for
# ~30 s, where it stopped two workers restoring), older (FENCED_LEADER_EPOCH), or
# a new leader without its high watermark yet (OFFSET_NOT_AVAILABLE). librdkafka marks none
# of them retriable.
_ASK_AGAIN = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._NOENT, KafkaError._TIMED_OUT,
                        KafkaError._TRANSPORT, KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.FENCED_LEADER_EPOCH,
                        KafkaError.OFFSET_NOT_AVAILABLE})
# One round's request: a leader that was killed holds its requests until it comes back,
# so a round is bounded and the next one asks whoever leads then.
_ROUND_TIMEOUT_S = 5.0


def _listed_offsets(admin: AdminClient, partitions: Sequence[_TP], spec: OffsetSpec, timeout: float) -> dict[_TP, int]:
    """ListOffsets for every partition; an error of _ASK_AGAIN is asked again, with fresh
    metadata, until ``timeout``."""
    offsets: dict[_TP, int] = {}
    pending = list(partitions)
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in pending},
                                     request_timeout=max(min(left, _ROUND_TIMEOUT_S), 1.0))
        retry: list[_TP] = []
        for tp, future in futures.items():
            try:
                offsets[(tp.topic, tp.partition)] = future.result().offset
            except KafkaException as exc:
                error = exc.args[0]
                if not (error.retriable() or error.code() in _ASK_AGAIN) or time.monotonic() >= deadline:
                    raise ProcessorError(f"ListOffsets for {tp.topic}[{tp.partition}] failed: {exc}") from exc
                retry.append((tp.topic, tp.partition))
        pending = retry
        if pending:
            time.sleep(0.1)
            _refresh_metadata(admin, deadline)
    return offsets


def _refresh_metadata(admin: AdminClient, deadline: float) -> None:
    """Ask for the cluster's metadata again: librdkafka answers ListOffsets from its
    metadata cache, and keeps a leader it cached as missing for metadata.max.age.ms (30 s
    here) after a whole request failed with _NOENT. Every topic: one request covers the
    topics of all the partitions still asked."""
    try:
        admin.list_topics(timeout=max(min(deadline - time.monotonic(), _ROUND_TIMEOUT_S), 0.5))
    except KafkaException:
        pass  # the next round fails the same way, and the deadline ends it


def _fetched_ends(bootstrap: str, tps: Sequence[_TP], timeout: float) -> dict[_TP, int]:
    """Ends from the high watermark of fetch responses (the Tansu path)."""
    reader = Consumer(reader_config(bootstrap, {"group.id": f"agentstream-lag-{uuid.uuid4().hex}"}))
    try:
        partitions = [TopicPartition(t, p, OFFSET_END) for t, p in tps]
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
    """Committed offset, true end offset and lag of ``group`` on every partition of ``topics``.

    The committed offsets are read before the ends: a group committing in between makes the
    lag larger by what arrived meanwhile, never negative (ends read first came out below
    commits made after them, in bench/soak.py's samples)."""
    partitions = _partitions(AdminClient(admin_config(bootstrap, {"log_level": 0})), bootstrap, topics, timeout)
    probe = Consumer(reader_config(bootstrap, {"group.id": group}))
    try:
        committed = committed_offsets(probe, [TopicPartition(t, p) for t, p in sorted(partitions)], timeout)
    finally:
        probe.close()
    ends = end_offsets(bootstrap, topics, timeout)
    rows = []
    for tp in committed:
        offset = tp.offset if tp.offset >= 0 else None
        rows.append(PartitionLag(group, tp.topic, tp.partition, offset, ends[(tp.topic, tp.partition)]))
    return rows


def fetched_lag(consumer: Consumer, partitions: Sequence[_TP], committed: Mapping[_TP, int]) -> dict[_TP, int]:
    """Records between where the consumer is and the high watermark its last fetch of each
    partition reported: local state, no request, so a metrics scrape may ask often.

    "Where it is": its position once it consumed a record since the assignment, else the
    offset this worker ``committed`` on it. Before either, librdkafka does not tell where its
    fetch began, and a guess (the log start) would show a restarted idle worker as far behind:
    such a partition is left out, as is one no fetch has answered yet."""
    lag: dict[_TP, int] = {}
    try:
        positions = consumer.position([TopicPartition(t, p) for t, p in partitions])
        for tp in positions:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            key = (tp.topic, tp.partition)
            at = tp.offset if tp.offset >= 0 else committed.get(key, -1)
            if at >= 0 and high >= 0:
                lag[key] = max(high - at, 0)
    except (KafkaException, RuntimeError):  # RuntimeError: closed while asked (a worker stopping)
        return {}
    return lag


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
