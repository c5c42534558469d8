"""Partitions fetched only while they may hold a record.

librdkafka opens no fetch session, so every fetch names every partition a worker is
assigned and the broker reads and meters each one (bench/RESULTS.md "Session 32"). Two
kinds of partition are left out of the fetches (paused) while they are idle:

- **retry tiers**, half of a worker's partitions and nearly always empty: paused as soon
  as the consumer has taken every record of one (librdkafka's partition-EOF event, in
  order behind them);
- **quiet partitions** (the worker's other inputs), only where the fetch wait is short
  (``quiet_pause_for``): on the embedded Tansu, which answers a fetch after a pass over its
  partitions instead of holding it until a record arrives, each idle member costs the
  broker 50 passes a second. Such a partition is paused at its end once no record came
  for ``quiet_s`` seconds, so a busy partition is never paused and only the first record
  after a quiet spell waits for the check below (``QUIET_CHECK_INTERVAL_S`` while one is
  paused; bench/RESULTS.md "Session 39"). Kafka holds an idle fetch (500 ms) and answers it
  when a record arrives: nothing to save there.

A paused partition is resumed when it may hold a record again:

- this worker sends a record to it with ``Processor.send`` (the retry chain sends to the
  partition of the record that failed, which this worker owns): resumed before the next
  poll, and not paused again until each such record is acknowledged and the consumer took
  it (sent through the partitioner, a quiet partition is resumed when the delivery report
  names it);
- another writer did (an upstream producer, another worker, a former owner before a
  rebalance, a tool, this worker's ``send_acked``): the paused partitions' ends are asked
  of the broker (ListOffsets) every ``CHECK_INTERVAL_S`` (``QUIET_CHECK_INTERVAL_S`` while
  a quiet partition is paused), and one whose end passed where it was paused is resumed.
  Tansu answers ListOffsets with the first offset of the last batch plus one: short of the
  true end, yet past where the partition was paused as soon as a batch was written after that.

A pause does not move what librdkafka fetches next (the record after the last one the
consumer took, or where a rewind put it). What must hold is that ``paused_at`` is never
past that point, or the check would not see the records between (a record stranded until
this worker sends there again). So ``paused_at`` is the end an EOF reported, taken only
while no hold rewinds the partition (a hold lowers it to the held record), and a record
handled after it never raises it. A lower ``paused_at`` only costs a resume that finds
nothing. A partition ``DueHolds`` holds is never resumed here: its records are skipped
while held, and a resume would fetch past the held record. An end taken in the poll that
revoked its partition may be the former assignment's: the processor drops such events (and
keeps the end of a partition only assigned in that poll, its new fetch's).

Every decision is made on the event loop's thread; the consumer calls are queued with the
hold's (ConsumerCalls), so both reach the consumer in the order they were decided.
"""

from __future__ import annotations

import logging
import time
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
# ... while a quiet input is paused: a task arriving after a quiet spell waits up to this per
# hop. On an idle Tansu, checks 4 times a second cost the five workers of the demo and the
# broker 0.063 of a core against 0.038 once a second, and the first task after the spell
# took 0.96 s against 2.2 s (bench/RESULTS.md "Session 39").
QUIET_CHECK_INTERVAL_S = 0.25
# A check not answered in this time is given up; the next one asks again.
LIST_ENDS_TIMEOUT_S = 5.0
# The requests that wake the fetcher after quiet partitions' resume (``_wake_fetchers``) block
# the poll thread at most this long in all: the request wakes it once sent (measured with a
# 0.5 ms timeout), the answer is not needed, and a local broker answers in ~1 ms.
WAKE_TIMEOUT_S = 0.1
# Quiet partitions are paused where a member's fetch wait is at most this (Tansu's 20 ms);
# Kafka's 500 ms is a held fetch, answered when a record arrives.
QUIET_PAUSE_MAX_FETCH_WAIT_MS = 50
# How long a partition stays without a record before it is paused there. Long against the
# gaps of a steady load, so only the first record after a quiet spell waits for a check: at
# 1 task/s over 6 partitions a partition's gaps average 6 s; with 10 s, the ~1 in 5 gaps
# longer than that raised the hops' p95 from 15-26 to 200-420 ms (p50 unchanged), and with
# 30 s about 1 in 150 is longer (bench/RESULTS.md "Session 39").
DEFAULT_QUIET_S = 30.0

# What ``count`` is told (agentstream_idle_partitions_total's ``change``).
PAUSED = "paused"  # a retry tier, at its end
PAUSED_QUIET = "paused_quiet"  # another input, at its end after a quiet spell
RESUMED_FOR_SEND = "resumed_for_send"  # this worker sent a record to it (a retry, most often)
RESUMED_BY_CHECK = "resumed_by_check"
CHECK_FAILED = "check_failed"


def quiet_pause_for(setting: float | None, fetch_wait_ms: int) -> float:
    """Seconds without a record before a quiet partition is paused; 0: never. The setting
    (``AGENTSTREAM_QUIET_PAUSE_S``) wins; unset, ``DEFAULT_QUIET_S`` where the fetch wait is
    short (the module docstring says why), else never."""
    if setting is not None:
        return setting
    return DEFAULT_QUIET_S if fetch_wait_ms <= QUIET_PAUSE_MAX_FETCH_WAIT_MS else 0.0


@dataclass(slots=True)
class _Partition:
    """What this worker knows of one assigned partition it may pause."""

    tier: bool  # a retry tier (paused at its end) or a quiet partition (paused after quiet_s there)
    end_seen: int | None = None  # the end an EOF reported, until a record at or past it is handled
    end_since: float | None = None  # when a check first saw ``end_seen`` (a quiet partition's spell)
    paused_at: int | None = None  # at or below where librdkafka fetches on resume (None: fetched)
    unacked: int = 0  # this worker's records sent to it and not acknowledged yet
    sent_end: int = 0  # one past the offset of this worker's last acknowledged record


class IdlePartitions:
    """Pauses and resumes a processor's idle partitions (see the module docstring):
    ``tiers`` at their end, ``quiet`` ones at their end after ``quiet_s`` without a record."""

    def __init__(self, tiers: Iterable[str], holds: DueHolds, calls: ConsumerCalls, stats: ProcessorStats,
                 list_ends: ListEnds, count: Callable[[str], None] = lambda change: None, *,
                 quiet: Iterable[str] = (), quiet_s: float = DEFAULT_QUIET_S) -> None:
        self.tiers = frozenset(tiers)
        self.quiet = frozenset(quiet) - self.tiers
        self.topics = self.tiers | self.quiet  # what it may pause, so what a send here tells it
        self.quiet_s = quiet_s
        self._holds = holds
        self._calls = calls
        self._stats = stats
        self._list_ends = list_ends
        self._count = count  # one of the changes above (a metric)
        self._partitions: dict[_TP, _Partition] = {}
        self._asked: dict[_TP, Future[Any]] = {}  # the ends of the check in flight
        self._next_check = 0.0

    def paused(self) -> list[_TP]:
        return sorted(tp for tp, part in self._partitions.items() if part.paused_at is not None)

    # -- assignment ----------------------------------------------------------------------
    def assigned(self, tps: Iterable[_TP]) -> None:
        """Newly assigned partitions start fetched (``DueHolds.resume_assigned`` resumed them)."""
        for tp in tps:
            if tp[0] in self.tiers or tp[0] in self.quiet:
                self._partitions[tp] = _Partition(tier=tp[0] in self.tiers)

    def revoked(self, tps: Iterable[_TP]) -> None:
        """Their state goes; a pause queued for them before is not made (see ``_pause_if_idle``)."""
        for tp in tps:
            self._partitions.pop(tp, None)
            self._asked.pop(tp, None)

    # -- what the processor sees -----------------------------------------------------------
    def at_end(self, tp: _TP, offset: int) -> None:
        """The consumer took every record of ``tp`` before ``offset``, its end in a fetch."""
        part = self._partitions.get(tp)
        if part is None or self._holds.is_held(tp):
            return  # a held partition's records were skipped: its rewind fetches them again
        part.end_seen = offset
        part.end_since = None
        if part.tier:
            self._pause_if_idle(tp, part)

    def handled(self, tp: _TP, offset: int) -> None:
        """A record of ``tp`` is handled (due): an end seen at or before it is no longer the end."""
        part = self._partitions.get(tp)
        if part is not None and part.end_seen is not None and offset >= part.end_seen:
            part.end_seen = None

    def rewound(self, tp: _TP, offset: int) -> None:
        """A hold rewinds ``tp`` to ``offset``: librdkafka fetches from there once released."""
        part = self._partitions.get(tp)
        if part is None:
            return
        part.end_seen = None
        if part.paused_at is not None:
            part.paused_at = min(part.paused_at, offset)

    def sent(self, topic: str, partition: int | None) -> None:
        """This worker produced to ``topic`` (``partition`` None: the partitioner picked)."""
        if partition is None:
            # A tier's partition is resumed now; a quiet one when the report names it
            # (``delivered``), rather than every partition of the topic for 30 s each.
            self._resume([tp for tp, part in self._partitions.items() if tp[0] == topic and part.tier], RESUMED_FOR_SEND)
            return
        part = self._partitions.get((topic, partition))
        if part is not None:
            part.unacked += 1
            self._resume([(topic, partition)], RESUMED_FOR_SEND)

    def delivered(self, topic: str, partition: int, offset: int | None, *, counted: bool) -> None:
        """The report of a record this worker sent (``offset`` None: refused; ``counted``:
        its partition was named when sent, so :meth:`sent` counted it)."""
        tp = (topic, partition)
        part = self._partitions.get(tp)
        if part is None:
            return
        if counted and part.unacked > 0:
            part.unacked -= 1
        if offset is not None:
            part.sent_end = max(part.sent_end, offset + 1)
        if part.tier:
            self._pause_if_idle(tp, part)
        elif not counted and offset is not None and part.paused_at is not None and offset >= part.paused_at:
            self._resume([tp], RESUMED_FOR_SEND)  # landed where the partitioner put it, past the pause

    # -- the check of other writers, and of quiet spells -------------------------------------
    def check_ends(self, now: float) -> None:
        """On the run loop's turn: take a finished check's answers; when one is due, pause the
        quiet partitions whose spell is long enough and start a check of the paused ones."""
        if self._asked:
            if not all(future.done() for future in self._asked.values()):
                return
            self._take_answers()
        if now < self._next_check:
            return
        if self.quiet:
            self._pause_quiet(now)
        paused = self.paused()
        quiet_paused = any(not self._partitions[tp].tier for tp in paused)
        self._next_check = now + (QUIET_CHECK_INTERVAL_S if quiet_paused else CHECK_INTERVAL_S)
        if not paused:
            return
        try:
            futures = self._list_ends(paused)
        except KafkaException as exc:  # asked again at the next check
            log.debug("asking the ends of paused partitions failed: %s", exc)
            self._count(CHECK_FAILED)
            return
        self._asked = {(tp.topic, tp.partition): future for tp, future in futures.items()}

    def _pause_quiet(self, now: float) -> None:
        """A quiet spell starts at the first check that finds the partition at its end (at
        most ``CHECK_INTERVAL_S`` after the EOF: a spell is never shorter than ``quiet_s``)."""
        for tp, part in self._partitions.items():
            if part.tier or part.end_seen is None or part.paused_at is not None:
                continue
            if part.end_since is None:
                part.end_since = now
            elif now - part.end_since >= self.quiet_s:
                self._pause_if_idle(tp, part)

    @property
    def checking(self) -> bool:
        """A check's request is in flight (its answers are taken on the loop's next turn)."""
        return bool(self._asked)

    def _take_answers(self) -> None:
        asked, self._asked = self._asked, {}
        moved = []
        for tp, future in asked.items():
            part = self._partitions.get(tp)
            if part is None or part.paused_at is None:
                continue
            try:
                end = future.result().offset
            except KafkaException as exc:  # asked again at the next check
                log.debug("the end of %s[%d] was not answered: %s", tp[0], tp[1], exc)
                self._count(CHECK_FAILED)
                continue
            if end > part.paused_at:
                log.debug("%s[%d]: its end %d passed %d", tp[0], tp[1], end, part.paused_at)
                moved.append(tp)
        self._resume(moved, RESUMED_BY_CHECK)

    # -- pause and resume ----------------------------------------------------------------
    def _pause_if_idle(self, tp: _TP, part: _Partition) -> None:
        end = part.end_seen
        if end is None or part.unacked or end < part.sent_end or self._holds.is_held(tp):
            return
        # Paused already by this account: paused again all the same. Either this end was
        # taken before that pause reached the consumer (a second pause costs nothing), or a
        # hold's release resumed the partition since (a pause is one flag in librdkafka).
        first = part.paused_at is None
        part.paused_at = end
        partition = TopicPartition(tp[0], tp[1])

        def pause(consumer: Consumer) -> None:
            # Made only if the decision still stands: a revoke in between and the partition
            # given back (new state), or a resume decided since, would leave librdkafka
            # pausing a partition this worker counts as fetched, which nothing resumes.
            if self._partitions.get(tp) is part and part.paused_at is not None:
                consumer.pause([partition])

        self._calls.queue(pause)
        if first:
            if part.tier:
                self._stats.tier_pauses += 1
            else:
                self._stats.quiet_pauses += 1
            self._count(PAUSED if part.tier else PAUSED_QUIET)
            log.debug("pausing %s[%d] at its end %d", tp[0], tp[1], end)

    def _resume(self, tps: list[_TP], change: str) -> None:
        """Resume those of ``tps`` this account has paused, with one consumer call."""
        resumed: list[TopicPartition] = []
        to_wake: list[TopicPartition] = []  # a tier's record waits seconds anyway; a quiet input's is a task arriving
        for tp in tps:
            part = self._partitions[tp]
            if part.paused_at is None:
                continue
            part.paused_at = None
            part.end_seen = None  # the next EOF says where the end is now
            part.end_since = None
            if self._holds.is_held(tp):
                continue  # the hold's release resumes it; a resume now would fetch past the held record
            resumed.append(TopicPartition(tp[0], tp[1]))
            if not part.tier:
                to_wake.append(resumed[-1])
            self._stats.partition_resumes += 1
            self._count(change)
            log.debug("resuming %s[%d]: %s", tp[0], tp[1], change)
        if not resumed:
            return

        def resume(consumer: Consumer) -> None:
            consumer.resume(resumed)
            _wake_fetchers(consumer, to_wake)

        self._calls.queue(resume)


def _wake_fetchers(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """librdkafka serves a resume on the thread of the partition's leader, which, with every
    partition of that broker paused, sleeps until its next 1 s tick: a resumed partition was
    fetched 0.6 s later on average, and ~1 ms later when a request to that broker woke the
    thread (bench/RESULTS.md "Session 39"; the same wait shows in confluent-kafka-go#630's
    log). Asking a partition's end is such a request, made for each (each may have its own
    leader) within ``WAKE_TIMEOUT_S`` in all."""
    deadline = time.monotonic() + WAKE_TIMEOUT_S
    for partition in partitions:
        left = deadline - time.monotonic()
        if left <= 0:
            return  # the rest are fetched at their thread's next tick
        try:
            consumer.get_watermark_offsets(partition, timeout=left, cached=False)
        except KafkaException as exc:  # sent, so woken, or not: at worst fetched at the next tick
            log.debug("waking the fetcher of %s[%d]: %s", partition.topic, partition.partition, exc)
