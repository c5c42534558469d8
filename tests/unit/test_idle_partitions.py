"""Retry-tier partitions paused at their end, quiet inputs paused at their end after a quiet
spell, and both resumed when they may hold a record (runtime/idle_partitions.py): the
decisions, and the consumer calls they queue for the poll thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agentstream.runtime import MessageContext
from agentstream.runtime.consumer_calls import ConsumerCalls
from agentstream.runtime.hold import DueHolds
from agentstream.runtime.idle_partitions import (
    CHECK_INTERVAL_S,
    DEFAULT_QUIET_S,
    QUIET_PAUSE_MAX_FETCH_WAIT_MS,
    IdlePartitions,
    quiet_pause_for,
)
from agentstream.runtime.stats import ProcessorStats

TIER = "tasks.retry-1"
TP = (TIER, 0)
DUE = "x-due-ms"
Loop = asyncio.AbstractEventLoop


class _Consumer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []
        self.wake_fails = False

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("pause", [(p.topic, p.partition) for p in partitions]))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", [(p.topic, p.partition) for p in partitions]))

    def seek(self, partition: TopicPartition) -> None:
        self.calls.append(("seek", [(partition.topic, partition.partition)]))

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls.append(("wake", [(partition.topic, partition.partition)]))  # a request to its broker
        if self.wake_fails:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return 0, 0


class _Ends:
    """ListOffsets stand-in: the futures of each call, answered by the test."""

    def __init__(self) -> None:
        self.asked: list[dict[tuple[str, int], Future[Any]]] = []

    def __call__(self, tps: list[tuple[str, int]]) -> dict[TopicPartition, Future[Any]]:
        futures: dict[tuple[str, int], Future[Any]] = {tp: Future() for tp in tps}
        self.asked.append(futures)
        return {TopicPartition(t, p): future for (t, p), future in futures.items()}

    def answer(self, ends: dict[tuple[str, int], int | KafkaError]) -> None:
        for tp, end in ends.items():
            future = self.asked[-1][tp]
            if isinstance(end, KafkaError):
                future.set_exception(KafkaException(end))
            else:
                future.set_result(TopicPartition(tp[0], tp[1], end))


class _Setup:
    def __init__(self) -> None:
        self.queue = ConsumerCalls()
        self.holds = DueHolds(self.queue)
        self.stats = ProcessorStats()
        self.ends = _Ends()
        self.changes: list[str] = []
        self.tiers = IdlePartitions([TIER], self.holds, self.queue, self.stats, self.ends, self.changes.append)
        self.consumer = _Consumer()

    def calls(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """What the poll thread does before its next poll (and no more after)."""
        self.queue.run(self.consumer)  # type: ignore[arg-type]
        calls, self.consumer.calls = self.consumer.calls, []
        return calls


@pytest.fixture
def loop() -> Iterator[Loop]:
    """Where a hold's release timer would be set (the tests release holds themselves)."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def s() -> Iterator[_Setup]:
    setup = _Setup()
    setup.tiers.assigned([TP, (TIER, 1), ("tasks", 0)])
    yield setup


def test_a_tier_partition_is_paused_at_its_end_and_no_other_partition_is(s: _Setup) -> None:
    s.tiers.at_end(TP, 7)
    s.tiers.at_end(("tasks", 0), 3)  # an input, not a tier
    s.tiers.at_end((TIER, 5), 0)  # not assigned here
    assert s.calls() == [("pause", [TP])]
    assert s.tiers.paused() == [TP] and s.stats.tier_pauses == 1


def test_a_retry_sent_resumes_the_partition_and_the_end_before_it_was_acknowledged_does_not_pause_it(s: _Setup) -> None:
    s.tiers.at_end(TP, 7)
    s.calls()
    s.tiers.sent(TIER, 0)
    assert s.calls() == [("resume", [TP])]
    s.tiers.at_end(TP, 7)  # the first fetch after the resume, answered before the record landed
    assert s.calls() == [] and s.tiers.paused() == []
    s.tiers.delivered(TIER, 0, 7, counted=True)
    s.tiers.at_end(TP, 7)  # an older answer still: the record at 7 was not taken
    assert s.calls() == []
    s.tiers.handled(TP, 7)
    s.tiers.at_end(TP, 8)
    assert s.calls() == [("pause", [TP])] and s.stats.partition_resumes == 1
    assert s.changes == ["paused", "resumed_for_send", "paused"]


def test_an_end_past_the_record_reported_before_its_acknowledgement_pauses_on_the_acknowledgement(s: _Setup) -> None:
    s.tiers.sent(TIER, 0)
    s.tiers.handled(TP, 7)
    s.tiers.at_end(TP, 8)
    assert s.calls() == []  # its report is not in yet
    s.tiers.delivered(TIER, 0, 7, counted=True)
    assert s.calls() == [("pause", [TP])]


def test_a_refused_record_lets_the_partition_pause_at_its_end(s: _Setup) -> None:
    s.tiers.sent(TIER, 0)
    s.tiers.at_end(TP, 7)
    s.tiers.delivered(TIER, 0, None, counted=True)
    assert s.calls() == [("pause", [TP])]


def _hold(s: _Setup, loop: Loop, offset: int) -> None:
    """A record of TP at ``offset`` not due yet, as Processor._handle holds it."""
    ctx = MessageContext(TIER, 0, offset, b"k", ((DUE, b"99999999999999"),), 0)
    assert s.holds.hold_if_not_due(DUE, ctx, loop)
    s.tiers.rewound(TP, offset)


def test_a_held_partition_is_never_resumed_or_paused_here(s: _Setup, loop: Loop) -> None:
    s.tiers.at_end(TP, 7)
    s.calls()
    _hold(s, loop, 7)  # a record taken before the pause took effect
    s.tiers.sent(TIER, 0)  # a retry to the held partition: its release resumes it
    s.tiers.at_end(TP, 9)
    assert s.calls() == [("pause", [TP]), ("seek", [TP])]  # the hold's own calls only
    s.holds._release(TP, 7)
    assert s.calls() == [("resume", [TP])]  # the hold's release
    s.tiers.delivered(TIER, 0, 9, counted=True)
    s.tiers.handled(TP, 9)
    s.tiers.at_end(TP, 10)
    assert s.calls() == [("pause", [TP])]


def test_a_partition_a_hold_released_is_paused_again_at_its_next_end(s: _Setup, loop: Loop) -> None:
    s.tiers.at_end(TP, 7)
    s.calls()
    _hold(s, loop, 7)
    s.holds._release(TP, 7)
    s.calls()  # pause, seek, resume: fetched again from 7
    s.tiers.handled(TP, 7)
    s.tiers.at_end(TP, 8)
    assert s.calls() == [("pause", [TP])] and s.stats.tier_pauses == 1


def test_a_record_sent_through_the_partitioner_resumes_every_paused_partition_of_its_topic(s: _Setup) -> None:
    s.tiers.at_end(TP, 7)
    s.tiers.at_end((TIER, 1), 2)
    s.calls()
    s.tiers.sent(TIER, None)
    assert sorted(tp for _, tps in s.calls() for tp in tps) == [TP, (TIER, 1)]
    s.tiers.delivered(TIER, 1, 2, counted=False)
    s.tiers.handled((TIER, 1), 2)
    s.tiers.at_end((TIER, 1), 3)
    assert s.calls() == [("pause", [(TIER, 1)])]


def test_the_check_resumes_a_paused_partition_another_writer_wrote_to(s: _Setup) -> None:
    s.tiers.at_end(TP, 7)
    s.tiers.at_end((TIER, 1), 2)
    s.calls()
    s.tiers.check_ends(100.0)
    assert sorted(s.ends.asked[-1]) == [TP, (TIER, 1)]
    s.ends.answer({TP: 8, (TIER, 1): 2})
    s.tiers.check_ends(100.1)  # the answers are taken; the next check is not due yet
    assert s.calls() == [("resume", [TP])] and s.tiers.paused() == [(TIER, 1)] and len(s.ends.asked) == 1
    s.tiers.check_ends(100.0 + CHECK_INTERVAL_S)
    assert sorted(s.ends.asked[-1]) == [(TIER, 1)]
    assert s.changes == ["paused", "paused", "resumed_by_check"]


def test_a_check_not_answered_yet_is_waited_for_and_a_failed_answer_asked_again(s: _Setup) -> None:
    s.tiers.at_end(TP, 7)
    s.calls()
    s.tiers.check_ends(100.0)
    s.tiers.check_ends(100.0 + 5 * CHECK_INTERVAL_S)  # still in flight: no second request
    assert len(s.ends.asked) == 1
    s.ends.answer({TP: KafkaError(KafkaError._TIMED_OUT)})
    s.tiers.check_ends(100.0 + 6 * CHECK_INTERVAL_S)
    assert s.calls() == [] and s.tiers.paused() == [TP] and len(s.ends.asked) == 2
    assert s.changes == ["paused", "check_failed"]


def test_a_record_taken_before_the_pause_took_effect_does_not_raise_where_it_is_paused(s: _Setup) -> None:
    """On Tansu the check's end is the first offset of the last batch plus one: raised past
    it to 8 inside a batch of 7..9, the pause would never see 8 and 9 (the consumer had
    taken 7 only). Left at 7, the check resumes it, and its next end pauses it again."""
    s.tiers.at_end(TP, 7)
    s.tiers.handled(TP, 7)  # fetched behind the end before the pause reached the consumer
    s.calls()
    s.tiers.check_ends(100.0)
    s.ends.answer({TP: 8})
    s.tiers.check_ends(100.1)
    assert s.calls() == [("resume", [TP])]


def test_a_revoked_partition_forgets_its_pause_and_a_check_in_flight_for_it(s: _Setup) -> None:
    s.tiers.at_end(TP, 7)
    s.calls()
    s.tiers.check_ends(100.0)
    s.tiers.revoked([TP])
    s.ends.answer({TP: 9})
    s.tiers.check_ends(100.1)
    s.tiers.sent(TIER, 0)
    assert s.calls() == [] and s.tiers.paused() == []
    s.tiers.assigned([TP])  # back: fetched (the assignment callback resumed it)
    s.tiers.at_end(TP, 9)
    assert s.calls() == [("pause", [TP])]


def test_an_end_reported_while_held_is_not_taken(s: _Setup, loop: Loop) -> None:
    """A hold at 7 skips the records behind it, so the end 9 reported in the same batch is
    not where the consumer is: its rewind fetches 7 and 8 again. Taken, a report served
    after the release (and before the fetch from 7 came back) would pause it at 9, and a
    check would never see 7 and 8."""
    s.tiers.sent(TIER, 0)  # the retry that lands at 8
    _hold(s, loop, 7)
    s.tiers.at_end(TP, 9)
    s.holds._release(TP, 7)
    s.tiers.delivered(TIER, 0, 8, counted=True)
    assert s.calls() == [("pause", [TP]), ("seek", [TP]), ("resume", [TP])]  # the hold's only
    s.tiers.handled(TP, 7)
    s.tiers.handled(TP, 8)
    s.tiers.at_end(TP, 9)
    assert s.calls() == [("pause", [TP])]


def test_a_record_held_behind_a_pause_keeps_the_partition_checked_from_below_it(s: _Setup, loop: Loop) -> None:
    s.tiers.at_end(TP, 7)  # a pause decided; 7 and 8 were taken before it reached the consumer
    s.tiers.handled(TP, 7)
    _hold(s, loop, 8)
    s.holds._release(TP, 8)
    s.calls()  # the pause, then the hold's pause, seek to 8 and resume
    s.tiers.check_ends(100.0)
    s.ends.answer({TP: 9})
    s.tiers.check_ends(100.1)
    assert s.calls() == [("resume", [TP])]  # 8 may not be fetched again yet


def test_a_pause_decided_before_a_revoke_is_not_made_after_the_partition_came_back(s: _Setup) -> None:
    s.tiers.at_end(TP, 7)  # queued; the poll that runs it revokes and gives back TP first
    s.tiers.revoked([TP])
    s.tiers.assigned([TP])
    assert s.calls() == [] and s.tiers.paused() == []


def test_a_pause_decided_and_then_undone_is_not_made(s: _Setup) -> None:
    s.tiers.at_end(TP, 7)
    s.tiers.sent(TIER, 0)
    assert s.calls() == [("resume", [TP])]


# -- quiet partitions (the worker's other inputs, where the fetch wait is short) -------------
INPUT = "tasks"
QUIET_S = 10.0


@pytest.fixture
def q() -> Iterator[_Setup]:
    """A processor that also pauses its input after QUIET_S without a record."""
    setup = _Setup()
    setup.tiers = IdlePartitions([TIER], setup.holds, setup.queue, setup.stats, setup.ends, setup.changes.append,
                                 quiet=[INPUT, TIER], quiet_s=QUIET_S)
    setup.tiers.assigned([TP, (INPUT, 0), (INPUT, 1)])
    yield setup


def _checks(s: _Setup, start: float, end: float) -> None:
    """The run loop's checks from ``start`` to ``end`` seconds, one a tenth of a second."""
    for tenth in range(round(start * 10), round(end * 10) + 1):
        s.tiers.check_ends(tenth / 10)


def test_an_input_is_paused_at_its_end_only_after_a_quiet_spell(q: _Setup) -> None:
    q.tiers.at_end((INPUT, 0), 5)
    assert q.calls() == []  # its end alone: a steady load reaches it between every two records
    _checks(q, 0.0, QUIET_S - 0.1)
    assert q.calls() == [] and q.tiers.paused() == []
    _checks(q, QUIET_S, QUIET_S + CHECK_INTERVAL_S)
    assert q.calls() == [("pause", [(INPUT, 0)])] and q.tiers.paused() == [(INPUT, 0)]
    assert q.stats.quiet_pauses == 1 and q.stats.tier_pauses == 0 and q.changes == ["paused_quiet"]


def test_a_record_in_the_spell_starts_it_again_from_the_next_end(q: _Setup) -> None:
    q.tiers.at_end((INPUT, 0), 5)
    _checks(q, 0.0, 6.0)
    q.tiers.handled((INPUT, 0), 5)  # a record: no longer at its end
    _checks(q, 6.1, 20.0)
    assert q.calls() == []
    q.tiers.at_end((INPUT, 0), 6)
    _checks(q, 20.1, 20.0 + QUIET_S - 1.1)
    assert q.calls() == []
    _checks(q, 20.0 + QUIET_S - 1.0, 20.0 + QUIET_S + CHECK_INTERVAL_S)
    assert q.calls() == [("pause", [(INPUT, 0)])]


def test_a_quiet_input_whose_end_moved_is_resumed_and_paused_again_only_after_another_spell(q: _Setup) -> None:
    q.tiers.at_end((INPUT, 0), 5)
    _checks(q, 0.0, QUIET_S + CHECK_INTERVAL_S)
    q.calls()
    assert q.ends.asked[-1].keys() == {(INPUT, 0)}  # the check that paused it asked its end at once
    q.ends.answer({(INPUT, 0): 6})  # an upstream producer wrote a task
    q.tiers.check_ends(13.1)
    # A quiet input's resume asks its end too: that request wakes librdkafka's fetcher.
    assert q.calls() == [("resume", [(INPUT, 0)]), ("wake", [(INPUT, 0)])]
    assert q.changes == ["paused_quiet", "resumed_by_check"]
    q.tiers.handled((INPUT, 0), 5)
    q.tiers.at_end((INPUT, 0), 6)
    _checks(q, 13.2, 13.2 + QUIET_S - 1.1)
    assert q.calls() == [] and q.tiers.paused() == []


def _answered_checks(s: _Setup, start: float, end: float) -> int:
    """The run loop's checks from ``start`` to ``end`` (a tenth of a second apart), each
    request answered at once with ends that move nothing; how many requests were made."""
    before = len(s.ends.asked)
    for tenth in range(round(start * 10), round(end * 10) + 1):
        for future in (f for futures in s.ends.asked for f in futures.values() if not f.done()):
            future.set_result(TopicPartition("", 0, 0))
        s.tiers.check_ends(tenth / 10)
    return len(s.ends.asked) - before


def test_the_ends_are_asked_more_often_while_a_quiet_input_is_paused(q: _Setup) -> None:
    """A task arriving after a quiet spell waits for the check; a tier's retry waits seconds anyway."""
    q.tiers.at_end(TP, 7)
    tiers_only = _answered_checks(q, 0.0, 2.9)
    assert tiers_only == 3  # only a tier paused: a check a second
    q.tiers.at_end((INPUT, 0), 5)
    _answered_checks(q, 3.0, 3.0 + QUIET_S + 2 * CHECK_INTERVAL_S)
    assert (INPUT, 0) in q.tiers.paused()
    # Every QUIET_CHECK_INTERVAL_S (0.25 s), on the first turn of the loop (a tenth of a
    # second) after it: every 0.3 s.
    assert _answered_checks(q, 20.0, 22.9) == 10 > tiers_only


def test_a_tier_named_quiet_too_is_still_paused_at_its_end_at_once(q: _Setup) -> None:
    q.tiers.at_end(TP, 7)
    assert q.calls() == [("pause", [TP])] and q.stats.tier_pauses == 1 and q.stats.quiet_pauses == 0


def test_a_record_the_worker_sends_to_its_own_paused_input_resumes_it(q: _Setup) -> None:
    q.tiers.at_end((INPUT, 1), 3)
    _checks(q, 0.0, QUIET_S + CHECK_INTERVAL_S)
    q.calls()
    q.tiers.sent(INPUT, 1)
    assert q.calls() == [("resume", [(INPUT, 1)]), ("wake", [(INPUT, 1)])]
    assert q.changes == ["paused_quiet", "resumed_for_send"]


@pytest.mark.parametrize(("setting", "fetch_wait_ms", "quiet_s"), [
    (None, 20, DEFAULT_QUIET_S),  # Tansu's default: an idle fetch is a pass over the partitions
    (None, QUIET_PAUSE_MAX_FETCH_WAIT_MS, DEFAULT_QUIET_S),
    (None, 500, 0.0),  # Kafka's default: a held fetch, answered when a record arrives
    (0.0, 20, 0.0),  # turned off
    (3.0, 500, 3.0),  # asked for
])
def test_the_quiet_spell_is_the_setting_else_by_the_fetch_wait(setting: float | None, fetch_wait_ms: int,
                                                               quiet_s: float) -> None:
    assert quiet_pause_for(setting, fetch_wait_ms) == quiet_s


def _paused_quiet(q: _Setup, *tps: tuple[str, int]) -> None:
    for tp in tps:
        q.tiers.at_end(tp, 3)
    _checks(q, 0.0, QUIET_S + CHECK_INTERVAL_S)
    assert q.tiers.paused() == sorted(tps)
    q.calls()


def test_the_inputs_a_check_found_written_are_resumed_in_one_call_and_each_woken(q: _Setup) -> None:
    _paused_quiet(q, (INPUT, 0), (INPUT, 1))
    q.ends.answer({(INPUT, 0): 4, (INPUT, 1): 4})
    q.tiers.check_ends(QUIET_S + CHECK_INTERVAL_S + 0.1)
    assert q.calls() == [("resume", [(INPUT, 0), (INPUT, 1)]), ("wake", [(INPUT, 0)]), ("wake", [(INPUT, 1)])]


def test_a_wake_that_fails_leaves_the_resume_made(q: _Setup) -> None:
    _paused_quiet(q, (INPUT, 0), (INPUT, 1))
    q.consumer.wake_fails = True
    q.ends.answer({(INPUT, 0): 4, (INPUT, 1): 4})
    q.tiers.check_ends(QUIET_S + CHECK_INTERVAL_S + 0.1)
    assert q.calls()[0] == ("resume", [(INPUT, 0), (INPUT, 1)]) and q.tiers.paused() == []


def test_a_record_sent_through_the_partitioner_resumes_only_the_quiet_input_it_landed_on(q: _Setup) -> None:
    _paused_quiet(q, (INPUT, 0), (INPUT, 1))
    q.tiers.sent(INPUT, None)
    assert q.calls() == []  # which partition: the report says
    q.tiers.delivered(INPUT, 1, 3, counted=False)
    assert q.calls() == [("resume", [(INPUT, 1)]), ("wake", [(INPUT, 1)])]
    assert q.tiers.paused() == [(INPUT, 0)] and q.changes == ["paused_quiet", "paused_quiet", "resumed_for_send"]
