"""Consumer calls decided on the event loop's thread and made by the poll thread.

Only the poll thread touches the consumer (runtime/processor.py). A hold's pause and
rewind (runtime/hold.py) and an idle partition's pause or resume (runtime/idle_partitions.py) are
queued here, in one queue, so they reach the consumer in the order they were decided.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from confluent_kafka import Consumer

ConsumerCall = Callable[[Consumer], None]


class ConsumerCalls:
    def __init__(self) -> None:
        self._calls: collections.deque[ConsumerCall] = collections.deque()

    def __len__(self) -> int:
        return len(self._calls)

    def queue(self, call: ConsumerCall) -> None:
        """Have the poll thread make ``call`` before its next poll (any thread)."""
        self._calls.append(call)

    def run(self, consumer: Consumer) -> None:
        """On the poll thread, before each poll."""
        while self._calls:
            self._calls.popleft()(consumer)
