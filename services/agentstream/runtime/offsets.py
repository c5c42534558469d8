"""Which source offset of a partition is safe to commit.

A record is done when its handler returned and every task it spawned has finished.
The committable offset is the lowest offset not yet done (Kafka commits "the next
offset to read"), so a record whose deferred work is still running is read again by
the next owner if this worker dies.
"""

from __future__ import annotations

import heapq

from confluent_kafka import KafkaError

TP = tuple[str, int]  # (topic, partition)

# Commit refusals that end by themselves: the group coordinator moved (a broker died or a
# partition of __consumer_offsets changed leader), or this member's place in the group is
# stale (a rebalance began, the session expired, KIP-848 bumped the member epoch).
_TRANSIENT_COMMIT_ERRORS = frozenset({
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.STALE_MEMBER_EPOCH, KafkaError.FENCED_MEMBER_EPOCH, KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._WAIT_COORD, KafkaError._STATE,
    KafkaError._ASSIGNMENT_LOST, KafkaError._NO_OFFSET,
})


def commit_refusal_is_transient(error: KafkaError) -> bool:
    """Whether a failed offset commit can be skipped (the records are processed again
    later) rather than stop the worker: not for fatal or authorization errors."""
    if error.fatal():
        return False
    return error.code() in _TRANSIENT_COMMIT_ERRORS or error.retriable()


class PartitionOffsets:
    __slots__ = ("_next", "_pending", "_finished")

    def __init__(self) -> None:
        self._next: int | None = None  # one past the highest offset seen
        self._pending: list[int] = []  # min-heap of offsets still in flight
        self._finished: set[int] = set()  # finished offsets still in the heap (lazy delete)

    def seen(self, offset: int) -> None:
        """The record at ``offset`` was handled with no deferred work."""
        if self._next is None or offset >= self._next:
            self._next = offset + 1

    def already_seen(self, offset: int) -> bool:
        return self._next is not None and offset < self._next

    def started(self, offset: int) -> None:
        """The record at ``offset`` spawned work that has not finished yet."""
        heapq.heappush(self._pending, offset)
        self.seen(offset)

    def finished(self, offset: int) -> None:
        self._finished.add(offset)
        while self._pending and self._pending[0] in self._finished:
            self._finished.discard(heapq.heappop(self._pending))

    @property
    def in_flight(self) -> int:
        return len(self._pending) - len(self._finished)

    def committable(self) -> int | None:
        """The offset to commit, or None when nothing was seen yet."""
        if self._pending:
            return self._pending[0]
        return self._next
