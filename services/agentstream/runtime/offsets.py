"""Which source offset of a partition is safe to commit.

A record is done when its handler returned and every task it spawned has finished.
The committable offset is the lowest offset not yet done (Kafka commits "the next
offset to read"), so a record whose deferred work is still running is read again by
the next owner if this worker dies.
"""

from __future__ import annotations

import heapq


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
