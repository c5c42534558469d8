"""Restore table partitions from their compacted changelog topics.

The end of a changelog partition is taken from the high watermark that fetch responses
carry (librdkafka's partition-EOF event), never from ListOffsets, which the embedded
Tansu broker answers wrongly. Compaction is never relied upon: replaying every record
from the recorded offset gives the same result whether or not compaction has run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from agentstream.runtime.errors import ProcessorError
from agentstream.runtime.store import PartitionStore

log = logging.getLogger(__name__)

_BATCH = 2_000


@dataclass(frozen=True, slots=True)
class RestoreReport:
    topic: str
    partition: int
    from_offset: int
    records: int
    seconds: float


def restore(
    reader: Consumer,
    targets: Mapping[tuple[str, int], PartitionStore],
    timeout: float = 120.0,
) -> list[RestoreReport]:
    """Bring every ``(changelog topic, partition) → store`` up to the end of its changelog."""
    if not targets:
        return []
    started = time.monotonic()
    start_offsets = {tp: _start_offset(store) for tp, store in targets.items()}
    reader.assign([TopicPartition(t, p, start_offsets[(t, p)]) for t, p in targets])
    pending: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {tp: [] for tp in targets}
    last_offset: dict[tuple[str, int], int] = {}
    counts = dict.fromkeys(targets, 0)
    open_partitions = set(targets)
    deadline = started + timeout
    try:
        while open_partitions:
            if time.monotonic() > deadline:
                raise ProcessorError(
                    f"Restoring {sorted(open_partitions)} did not reach the end of the changelog "
                    f"within {timeout:.0f} s; is the broker reachable?"
                )
            first = reader.poll(0.2)
            messages = [first, *reader.consume(_BATCH, 0)] if first is not None else []
            for msg in messages:
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(tp)
                        continue
                    raise ProcessorError(f"Reading changelog {tp[0]}[{tp[1]}] failed: {err}")
                key = msg.key()
                if key is not None:
                    pending[tp].append((key, msg.value()))
                last_offset[tp] = msg.offset()
                counts[tp] += 1
            for tp, records in pending.items():
                if len(records) >= _BATCH or (records and tp not in open_partitions):
                    targets[tp].apply_changelog(records, last_offset[tp])
                    pending[tp] = []
    finally:
        reader.unassign()
    seconds = time.monotonic() - started
    reports = [RestoreReport(t, p, start_offsets[(t, p)], counts[(t, p)], seconds) for t, p in targets]
    for report in reports:
        if report.records:
            log.info(
                "restored %s[%d] from offset %d: %d records in %.2f s",
                report.topic, report.partition, report.from_offset, report.records, report.seconds,
            )
    return reports


def _start_offset(store: PartitionStore) -> int:
    recorded = store.changelog_offset
    return 0 if recorded is None else recorded + 1


def read_partition(reader: Consumer, topic: str, partition: int, from_offset: int, timeout: float = 60.0) -> list[tuple[bytes | None, bytes | None, int]]:
    """Every record of ``topic[partition]`` from ``from_offset`` to the end seen by a fetch."""
    reader.assign([TopicPartition(topic, partition, max(from_offset, 0))])
    records: list[tuple[bytes | None, bytes | None, int]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise ProcessorError(f"Reading {topic}[{partition}] did not reach its end within {timeout:.0f} s.")
            msg = reader.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return records
                raise ProcessorError(f"Reading {topic}[{partition}] failed: {err}")
            records.append((msg.key(), msg.value(), msg.offset()))
    finally:
        reader.unassign()
