"""Where the fetch of a newly assigned partition starts: the group's committed offset, which
the worker asks for itself and hands to librdkafka with the assignment.

Why not let librdkafka ask: given a partition without an offset, librdkafka sends the
coordinator an OffsetFetch before it starts fetching. When that request fails as a whole
with NOT_COORDINATOR (the coordinator moved: a broker restarted, stalled or lost its
leadership), librdkafka refreshes the coordinator but never sends the OffsetFetch again
(confluentinc/librdkafka#5586, open). The partition stays assigned and unfetched until it
is revoked: at the next rebalance with the classic protocol, possibly never under KIP-848
while this member keeps it; and meanwhile no other partition assigned to the member without
an offset starts either. The worker looks healthy all along. In this project's CI a
specialist stopped reading that way and two tasks were never answered.

Here the offsets are asked with ``committed()``, asked again while the coordinator moves
(runtime/committed.py), and a partition assigned with an offset is fetched from it at once,
without librdkafka's own lookup. tests/integration/test_fetch_start.py refuses the request
through a proxy; when #5586 is fixed in the bundled librdkafka, that test passes without
this module too, which is the sign to drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from agentstream.clients import CLASSIC, CONSUMER, CONSUMER_PROTOCOL, GROUP_PROTOCOLS
from agentstream.runtime.committed import committed_offsets

log = logging.getLogger(__name__)

# How long an assignment waits for the coordinator before it leaves the lookup to librdkafka
# (which may then stall as above): a coordinator that moved answers within seconds. The
# member's session outlives the wait (its heartbeats run on librdkafka's own thread); the
# processor counts the wait as part of taking the partitions (live, not ready), and a
# restore plus this wait must stay under max.poll.interval.ms (clients.CONSUMER, 300 s).
FETCH_START_TIMEOUT_S = 30.0

# Where a partition the group never committed starts: what librdkafka's auto.offset.reset
# would pick (OFFSET_INVALID would make librdkafka look the offset up again).
_NEVER_COMMITTED = {"earliest": OFFSET_BEGINNING, "latest": OFFSET_END}[CONSUMER["auto.offset.reset"]]


def fetch_starts(consumer: Consumer, partitions: list[TopicPartition], timeout: float, *,
                 should_stop: Callable[[], bool] = lambda: False) -> list[TopicPartition]:
    """Each of ``partitions`` with the offset its fetch starts from: the group's committed
    offset (with its leader epoch, so librdkafka can tell a truncated log), or where
    auto.offset.reset starts where the group never committed one. A partition the
    coordinator answered with an error comes back without an offset: librdkafka looks it up."""
    starts = []
    for tp in committed_offsets(consumer, partitions, timeout, should_stop=should_stop):
        if tp.error is not None:
            log.warning("the committed offset of %s[%s] is unknown (%s); librdkafka asks for it itself",
                        tp.topic, tp.partition, tp.error)
            starts.append(TopicPartition(tp.topic, tp.partition))
        else:
            if tp.offset < 0:
                tp.offset = _NEVER_COMMITTED
            starts.append(tp)
    return starts


def assign_from_committed(consumer: Consumer, partitions: list[TopicPartition], protocol: str, *,
                          timeout: float = FETCH_START_TIMEOUT_S, should_stop: Callable[[], bool] = lambda: False) -> None:
    """In the assignment callback: assign ``partitions`` (the ones just given) at their fetch
    starts, with the call the group ``protocol`` takes: KIP-848 is incremental; the classic
    protocol with the range assignor (clients.CONSUMER) is eager and gives the whole
    assignment at once. If the coordinator has not answered in ``timeout`` s, answers with
    another error, or ``should_stop()``, the partitions are assigned without offsets and
    librdkafka looks them up, as it would have."""
    if protocol not in GROUP_PROTOCOLS:
        raise ValueError(f"Unknown group protocol {protocol!r}; use one of {', '.join(GROUP_PROTOCOLS)}.")
    if not partitions:
        return
    try:
        starts = fetch_starts(consumer, partitions, timeout, should_stop=should_stop)
    except KafkaException as exc:
        log.warning("the committed offsets of %s are unknown (%s); librdkafka asks for them itself, which may leave "
                    "them unfetched (librdkafka#5586): if their lag grows while this worker is up, restart it",
                    ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions), exc)
        starts = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    if protocol == CONSUMER_PROTOCOL:
        consumer.incremental_assign(starts)
    else:
        assert protocol == CLASSIC
        consumer.assign(starts)
