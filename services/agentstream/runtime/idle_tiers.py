"""Retry-tier partitions fetched only while they may hold a record.

librdkafka opens no fetch session, so every fetch names every partition a worker is
assigned and the broker reads and meters each one (bench/RESULTS.md "Session 32"); half
of them are retry tiers, nearly always empty. So a tier partition is paused once the
consumer has taken every record of it (librdkafka's partition-EOF event, in order behind
them) and resumed when it may hold a record again:

- this worker sends a retry to it (the retry chain sends to the partition of the record
  that failed, which this worker owns): resumed before the next poll, and not paused again
  until each such record is acknowledged and the consumer took it;
- another writer did (a former owner before a rebalance, a tool): the paused partitions'
  ends are asked of the broker (ListOffsets) every ``CHECK_INTERVAL_S``, and one whose end
  passed where it was paused is resumed. Tansu answers ListOffsets with the first offset
  of the last batch plus one: short of the true end, yet past where the partition was
  paused as soon as a batch was written after that.

A pause does not move what librdkafka fetches next (the record after the last one the
consumer took, or where a rewind put it). What must hold is that ``paused_at`` is never
past that point, or the check would not see the records between (a record stranded until
this worker sends there again). So ``paused_at`` is the end an EOF reported, taken only
while no hold rewinds the partition (a hold lowers it to the held record), and a record
handled after it never raises it. A lower ``paused_at`` only costs a resume that finds
nothing. A partition ``DueHolds`` holds is never resumed here: its records are skipped
while held, and a resume would fetch past the held record. An end reported before a
rebalance may be the former assignment's: the processor drops such events.

Every decision is made on the event loop's thread; the consumer calls are queued with the
hold's (ConsumerCalls), so both reach the consumer in the order they were decided.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from agentstream.runtime.consumer_calls import ConsumerCalls
from agentstream.runtime.hold import DueHolds
from agentstream.runtime.stats import ProcessorStats

log = logging.getLogger(__name__)

_TP = tuple[str, int]
# ListOffsets "latest" for the partitions: a future per partition (AdminClient.list_offsets).
ListEnds = Callable[[list[_TP]], Mapping[TopicPartition, "Future[Any]"]]

# How often the paused partitions' ends are asked: the longest a record written by another
# process waits before it is fetched (a tier's own delay is seconds: 5 s in the examples).
CHECK_INTERVAL_S = 1.0
# A check not answered in this time is given up; the next one asks again.
LIST_ENDS_TIMEOUT_S = 5.0

# What ``count`` is told (agentstream_idle_tiers_total's ``change``).
PAUSED = "paused"
RESUMED_FOR_RETRY = "resumed_for_retry"
RESUMED_BY_CHECK = "resumed_by_check"
CHECK_FAILED = "check_failed"


@dataclass(slots=True)
class _Tier:
    """What this worker knows of one assigned tier partition."""

    end_seen: int | None = None  # the end an EOF reported, until a record at or past it is handled
    paused_at: int | None = None  # at or below where librdkafka fetches on resume (None: fetched)
    unacked: int = 0  # this worker's records sent to it and not acknowledged yet
    sent_end: int = 0  # one past the offset of this worker's last acknowledged record


class IdleTiers:
    """Pauses and resumes a processor's retry-tier partitions (see the module docstring)."""

    def __init__(self, topics: Iterable[str], holds: DueHolds, calls: ConsumerCalls, stats: ProcessorStats,
                 list_ends: ListEnds, count: Callable[[str], None] = lambda change: None) -> None:
        self.topics = frozenset(topics)
        self._holds = holds
        self._calls = calls
        self._stats = stats
        self._list_ends = list_ends
        self._count = count  # one of the changes above (a metric)
        self._tiers: dict[_TP, _Tier] = {}
        self._asked: dict[_TP, Future[Any]] = {}  # the ends of the check in flight
        self._next_check = 0.0

    def paused(self) -> list[_TP]:
        return sorted(tp for tp, tier in self._tiers.items() if tier.paused_at is not None)

    # -- assignment ----------------------------------------------------------------------
    def assigned(self, tps: Iterable[_TP]) -> None:
        """Newly assigned partitions start fetched (``DueHolds.resume_assigned`` resumed them)."""
        for tp in tps:
            if tp[0] in self.topics:
                self._tiers[tp] = _Tier()

    def revoked(self, tps: Iterable[_TP]) -> None:
        """Their state goes; a pause queued for them before is not made (see ``_pause_if_idle``)."""
        for tp in tps:
            self._tiers.pop(tp, None)
            self._asked.pop(tp, None)

    # -- what the processor sees -----------------------------------------------------------
    def at_end(self, tp: _TP, offset: int) -> None:
        """The consumer took every record of ``tp`` before ``offset``, its end in a fetch."""
        tier = self._tiers.get(tp)
        if tier is None or self._holds.is_held(tp):
            return  # a held partition's records were skipped: its rewind fetches them again
        tier.end_seen = offset
        self._pause_if_idle(tp, tier)

    def handled(self, tp: _TP, offset: int) -> None:
        """A record of ``tp`` is handled (due): an end seen at or before it is no longer the end."""
        tier = self._tiers.get(tp)
        if tier is not None and tier.end_seen is not None and offset >= tier.end_seen:
            tier.end_seen = None

    def rewound(self, tp: _TP, offset: int) -> None:
        """A hold rewinds ``tp`` to ``offset``: librdkafka fetches from there once released."""
        tier = self._tiers.get(tp)
        if tier is None:
            return
        tier.end_seen = None
        if tier.paused_at is not None:
            tier.paused_at = min(tier.paused_at, offset)

    def sent(self, topic: str, partition: int | None) -> None:
        """This worker produced to ``topic`` (``partition`` None: the partitioner picked)."""
        if partition is None:
            for tp in [tp for tp in self._tiers if tp[0] == topic]:
                self._resume(tp, RESUMED_FOR_RETRY)
            return
        tier = self._tiers.get((topic, partition))
        if tier is not None:
            tier.unacked += 1
            self._resume((topic, partition), RESUMED_FOR_RETRY)

    def delivered(self, topic: str, partition: int, offset: int | None, *, counted: bool) -> None:
        """The report of a record this worker sent (``offset`` None: refused; ``counted``:
        its partition was named when sent, so :meth:`sent` counted it)."""
        tp = (topic, partition)
        tier = self._tiers.get(tp)
        if tier is None:
            return
        if counted and tier.unacked > 0:
            tier.unacked -= 1
        if offset is not None:
            tier.sent_end = max(tier.sent_end, offset + 1)
        self._pause_if_idle(tp, tier)

    # -- the check of other writers ----------------------------------------------------------
    def check_ends(self, now: float) -> None:
        """On the run loop's turn: take a finished check's answers; start one when due."""
        if self._asked:
            if not all(future.done() for future in self._asked.values()):
                return
            self._take_answers()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL_S
        paused = self.paused()
        if not paused:
            return
        try:
            futures = self._list_ends(paused)
        except KafkaException as exc:  # asked again at the next check
            log.debug("asking the ends of paused tier partitions failed: %s", exc)
            self._count(CHECK_FAILED)
            return
        self._asked = {(tp.topic, tp.partition): future for tp, future in futures.items()}

    def _take_answers(self) -> None:
        asked, self._asked = self._asked, {}
        for tp, future in asked.items():
            tier = self._tiers.get(tp)
            if tier is None or tier.paused_at is None:
                continue
            try:
                end = future.result().offset
            except KafkaException as exc:  # asked again at the next check
                log.debug("the end of %s[%d] was not answered: %s", tp[0], tp[1], exc)
                self._count(CHECK_FAILED)
                continue
            if end > tier.paused_at:
                log.debug("%s[%d]: its end %d passed %d", tp[0], tp[1], end, tier.paused_at)
                self._resume(tp, RESUMED_BY_CHECK)

    # -- pause and resume ----------------------------------------------------------------
    def _pause_if_idle(self, tp: _TP, tier: _Tier) -> None:
        end = tier.end_seen
        if end is None or tier.unacked or end < tier.sent_end or self._holds.is_held(tp):
            return
        # Paused already by this account: paused again all the same. Either this end was
        # taken before that pause reached the consumer (a second pause costs nothing), or a
        # hold's release resumed the partition since (a pause is one flag in librdkafka).
        first = tier.paused_at is None
        tier.paused_at = end
        partition = TopicPartition(tp[0], tp[1])

        def pause(consumer: Consumer) -> None:
            # Made only if the decision still stands: a revoke in between and the partition
            # given back (new state), or a resume decided since, would leave librdkafka
            # pausing a partition this worker counts as fetched, which nothing resumes.
            if self._tiers.get(tp) is tier and tier.paused_at is not None:
                consumer.pause([partition])

        self._calls.queue(pause)
        if first:
            self._stats.tier_pauses += 1
            self._count(PAUSED)
            log.debug("pausing %s[%d] at its end %d", tp[0], tp[1], end)

    def _resume(self, tp: _TP, change: str) -> None:
        tier = self._tiers[tp]
        if tier.paused_at is None:
            return
        tier.paused_at = None
        tier.end_seen = None  # the next EOF says where the end is now
        if self._holds.is_held(tp):
            return  # the hold's release resumes it; a resume now would fetch past the held record
        partition = TopicPartition(tp[0], tp[1])
        self._calls.queue(lambda consumer: consumer.resume([partition]))
        self._stats.tier_resumes += 1
        self._count(change)
        log.debug("resuming %s[%d]: %s", tp[0], tp[1], change)
