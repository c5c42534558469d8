"""Restore table partitions from their compacted changelog topics.

The caller gives the ``(log start, end)`` of each changelog partition (ListOffsets on
Apache Kafka; the end from a fetch's high watermark on Tansu, see
``agentstream.runtime.lag.watermarks``). A store resumes after the changelog offset it
recorded, reading up to that end. Compaction is never relied upon: replaying every record
from the recorded offset gives the same result whether or not the cleaner has run.

A store whose recorded offset lies beyond the changelog's end (the topic was recreated,
or the cluster rebuilt) or before its log start (records removed by retention) no longer
matches its changelog. As Kafka Streams does, it is wiped and restored in full from the
changelog, which is the source of truth, with a warning naming the store.

A stop request (``should_stop``) interrupts a restore between two fetches: what was
applied stays, with its changelog offset, and the next restore of the store resumes there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from agentstream.runtime.errors import ProcessorError, RestoreInterrupted
from agentstream.runtime.store import PartitionStore

log = logging.getLogger(__name__)

_BATCH = 2_000
_TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RestoreReport:
    topic: str
    partition: int
    from_offset: int
    records: int
    seconds: float
    wiped: bool = False


def restore(
    reader: Consumer,
    targets: Mapping[_TP, PartitionStore],
    bounds_of: Callable[[list[_TP]], Mapping[_TP, tuple[int, int]]],
    timeout: float = 120.0,
    should_stop: Callable[[], bool] | None = None,
) -> list[RestoreReport]:
    """Bring every ``(changelog topic, partition) → store`` up to the end of its changelog
    (``bounds_of``: each partition's log start and end offsets, e.g. watermarks);
    RestoreInterrupted as soon as ``should_stop()`` is true.

    A store may be in use while it is restored (PartitionStore.restoring): each store's
    recorded offset is read before the changelog's end, so that a write the loop lands
    meanwhile (recorded past the end read) is not taken for a store ahead of its changelog
    (which would wipe it), and the restore applies no record older than such a write."""
    if not targets:
        return []
    started = time.monotonic()
    with contextlib.ExitStack() as restoring:
        recorded = {tp: restoring.enter_context(store.restoring()) for tp, store in targets.items()}
        bounds = bounds_of(list(targets))
        return _bring_up(reader, targets, recorded, bounds, started, started + timeout, should_stop or (lambda: False))


def _bring_up(
    reader: Consumer, targets: Mapping[_TP, PartitionStore], recorded: Mapping[_TP, int | None],
    bounds: Mapping[_TP, tuple[int, int]], started: float, deadline: float, should_stop: Callable[[], bool],
) -> list[RestoreReport]:
    """restore() once the stores' recorded offsets and then their changelogs' ends are read."""
    wiped = {tp for tp, store in targets.items() if _out_of_range(tp, store, recorded[tp], bounds[tp])}
    start_offsets = {tp: _start_offset(None if tp in wiped else recorded[tp], bounds[tp][0]) for tp in targets}
    ends = {tp: bounds[tp][1] for tp in targets}
    open_partitions = {tp for tp in targets if start_offsets[tp] < ends[tp]}
    if open_partitions:
        log.info("restoring %d changelog partition(s), %d records at most",
                 len(open_partitions), sum(ends[tp] - start_offsets[tp] for tp in open_partitions))
    counts = _read_into(reader, targets, start_offsets, ends, open_partitions, deadline, should_stop)
    seconds = time.monotonic() - started
    reports = [RestoreReport(t, p, start_offsets[(t, p)], counts[(t, p)], seconds, (t, p) in wiped) for t, p in targets]
    for report in reports:
        if report.records:
            log.info(
                "restored %s[%d] from offset %d: %d records in %.2f s",
                report.topic, report.partition, report.from_offset, report.records, report.seconds,
            )
    return reports


def _out_of_range(tp: _TP, store: PartitionStore, recorded: int | None, bound: tuple[int, int]) -> bool:
    """Reset ``store`` if the offset it recorded (``recorded``, read before ``bound``) is not
    in its changelog any more; True if so."""
    log_start, end = bound
    if recorded is None or log_start <= recorded + 1 <= end:
        return False
    held = f"offsets {log_start}..{end - 1}" if end > log_start else "no records"
    log.warning(
        "store %s recorded changelog offset %d but %s[%d] holds %s (topic recreated, cluster "
        "rebuilt or records expired): wiping the store and restoring it from the changelog",
        store.path, recorded, tp[0], tp[1], held,
    )
    store.reset()
    return True


def _start_offset(recorded: int | None, log_start: int) -> int:
    return log_start if recorded is None else max(recorded + 1, log_start)


def _read_into(
    reader: Consumer,
    targets: Mapping[_TP, PartitionStore],
    start_offsets: Mapping[_TP, int],
    ends: Mapping[_TP, int],
    open_partitions: set[_TP],
    deadline: float,
    should_stop: Callable[[], bool],
) -> dict[_TP, int]:
    """Read each open partition from its start to its end, applying records in batches."""
    counts = dict.fromkeys(targets, 0)
    if not open_partitions:
        return counts
    pending: dict[_TP, list[tuple[int, bytes, bytes | None]]] = {tp: [] for tp in open_partitions}
    last_offset: dict[_TP, int] = {}
    reader.assign([TopicPartition(t, p, start_offsets[(t, p)]) for t, p in sorted(open_partitions)])
    try:
        while open_partitions:
            if should_stop():
                raise RestoreInterrupted(f"restore of {len(open_partitions)} changelog partition(s) stopped "
                                         f"after {sum(counts.values())} records")
            if time.monotonic() > deadline:
                raise ProcessorError(
                    f"Restoring {sorted(open_partitions)} did not reach the end of the changelog "
                    f"in time; is the broker reachable?"
                )
            first = reader.poll(0.2)
            for msg in [first, *reader.consume(_BATCH, 0)] if first is not None else []:
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise ProcessorError(f"Reading changelog {tp[0]}[{tp[1]}] failed: {err}")
                    open_partitions.discard(tp)  # the end moved back: nothing more to read
                    continue
                if msg.key() is not None:
                    pending[tp].append((msg.offset(), msg.key(), msg.value()))
                last_offset[tp] = msg.offset()
                counts[tp] += 1
                # Compaction leaves gaps, and the last offsets may be transaction markers:
                # done once the position is at the end, whatever the last record's offset.
                if msg.offset() + 1 >= ends[tp]:
                    open_partitions.discard(tp)
            for tp, records in pending.items():
                if len(records) >= _BATCH or (records and tp not in open_partitions):
                    targets[tp].apply_changelog(records, last_offset[tp])
                    pending[tp] = []
            _close_reached(reader, open_partitions, ends)
    finally:
        reader.unassign()
    return counts


def _close_reached(reader: Consumer, open_partitions: set[_TP], ends: Mapping[_TP, int]) -> None:
    """Partitions whose position passed the end without a record there (markers, gaps)."""
    if not open_partitions:
        return
    for tp in reader.position([TopicPartition(t, p) for t, p in open_partitions]):
        if tp.offset >= 0 and tp.offset >= ends[(tp.topic, tp.partition)]:
            open_partitions.discard((tp.topic, tp.partition))


Records = list[tuple[bytes | None, bytes | None, int]]


def read_partition(reader: Consumer, topic: str, partition: int, from_offset: int, timeout: float = 60.0) -> Records:
    """Every record of ``topic[partition]`` from ``from_offset`` to the end seen by a fetch."""
    return read_partitions(reader, topic, {partition: from_offset}, timeout)[partition]


def read_partitions(
    reader: Consumer, topic: str, starts: Mapping[int, int], timeout: float = 60.0,
    keep: Callable[[bytes | None], bool] | None = None, should_stop: Callable[[], bool] = lambda: False,
) -> dict[int, Records]:
    """Every record of each partition of ``topic`` in ``starts`` (partition -> offset) to the
    end seen by a fetch, all read at once (one fetch wait, not one per partition); with
    ``keep``, only those whose value it keeps (a long read holds only what it needs). Raises
    RestoreInterrupted once ``should_stop()`` (asked between polls)."""
    # Metadata first: a topic the reader never read may otherwise wait for librdkafka's next
    # refresh before its first fetch (0.4-0.9 s on Kafka).
    reader.list_topics(topic, timeout=timeout)
    reader.assign([TopicPartition(topic, partition, max(offset, 0)) for partition, offset in starts.items()])
    records: dict[int, Records] = {partition: [] for partition in starts}
    open_partitions = set(starts)
    deadline = time.monotonic() + timeout
    try:
        while open_partitions:
            if should_stop():
                raise RestoreInterrupted(f"a stop was requested while reading {topic}")
            if time.monotonic() > deadline:
                unread = ", ".join(f"{topic}[{p}]" for p in sorted(open_partitions))
                raise ProcessorError(f"Reading {unread} did not reach the end within {timeout:.0f} s.")
            msg = reader.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(msg.partition())
                    continue
                raise ProcessorError(f"Reading {msg.topic()}[{msg.partition()}] failed: {err}")
            if keep is None or keep(msg.value()):
                records[msg.partition()].append((msg.key(), msg.value(), msg.offset()))
        return records
    finally:
        reader.unassign()
