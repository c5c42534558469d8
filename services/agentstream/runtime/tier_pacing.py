"""Fetching a stage's retry tiers in short windows instead of with every fetch of its input.

Where a member's fetch wait is short (the embedded Tansu's 20 ms, ``clients.py`` says why),
every fetch asks for every partition it is assigned, and Tansu's cost grows with the
partitions a fetch names: five idle members on 4 topics of 6 partitions cost it 0.61 of
a core, on 1 topic 0.16 (bench/RESULTS.md, session 28). A support-desk stage consumes three
retry tiers beside its input (and a specialist the control and approval topics), and a
tier's record waits seconds by design (its delay), so the partitions of the topics bound
with a due header (``Processor.handler(due_header=)``: the retry chain's tiers) are
paused except for a window of ``OPEN_S`` every ``EVERY_S``: a retry is fetched up to
``EVERY_S`` later than it would be, and an idle stage's fetches name half to a quarter as
many partitions most of the time.

The pausing is librdkafka's: a paused partition is not fetched, what was fetched of it and
not returned is dropped, and its resume fetches from the position after the last record
returned to the application, so nothing is skipped or returned twice. A partition held by
``runtime.hold.DueHolds`` (paused and rewound to a record not yet due) is left to it: a
pause here would move its rewound position. Calls are made by the poll thread, the only one
that touches the consumer, just before it polls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from confluent_kafka import Consumer, KafkaException, TopicPartition

log = logging.getLogger(__name__)

EVERY_S = 1.0  # a retry waits up to about this much longer than its tier's delay (the support desk's: 5 s, 30 s, 5 min)
OPEN_S = 0.1  # long enough for a few fetches at the short waits pacing is used with
PACED_UP_TO_FETCH_WAIT_MS = 50  # a longer wait (Kafka's 500 ms) makes an idle fetch cheap and a window too short


def paces_tiers(fetch_wait_ms: int) -> bool:
    """Whether a member fetching with ``fetch_wait_ms`` paces its retry tiers (see the module)."""
    return fetch_wait_ms <= PACED_UP_TO_FETCH_WAIT_MS


class TierPacing:
    """Opens and closes the fetching of the ``tiers``' assigned partitions on a clock."""

    def __init__(self, tiers: Collection[str], is_held: Callable[[tuple[str, int]], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tiers = frozenset(tiers)
        self._is_held = is_held
        self._clock = clock
        self._open = True  # librdkafka fetches a newly assigned partition: the first window is open
        self._next_change = clock() + OPEN_S

    def describe(self) -> str:
        return f"{OPEN_S:g} s in every {EVERY_S:g} s"

    def before_poll(self, consumer: Consumer) -> None:
        """On the poll thread: pause or resume the tiers when a window opens or closes."""
        now = self._clock()
        if now < self._next_change or not self._tiers:
            return
        self._open = not self._open
        self._next_change = now + (OPEN_S if self._open else EVERY_S - OPEN_S)
        try:
            partitions = self._tier_partitions(consumer)
            if partitions:
                (consumer.resume if self._open else consumer.pause)(partitions)
        except KafkaException as exc:
            # Not worth the worker: a failed resume leaves the tiers paused until the next
            # window opens (EVERY_S), a failed pause leaves them fetched until it closes.
            log.warning("could not %s the retry tiers' partitions: %s", "resume" if self._open else "pause", exc)

    def _tier_partitions(self, consumer: Consumer) -> list[TopicPartition]:
        # From the assignment each time: a rebalance may give back a partition paused here
        # still paused, and one revoked meanwhile must not be named.
        return [TopicPartition(tp.topic, tp.partition) for tp in consumer.assignment()
                if tp.topic in self._tiers and not self._is_held((tp.topic, tp.partition))]
