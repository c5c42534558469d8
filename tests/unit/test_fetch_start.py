"""runtime/fetch_start.py: a newly assigned partition is handed to librdkafka with the offset
its fetch starts from, asked again while the coordinator moves (confluentinc/librdkafka#5586).
No I/O: the consumer is a stand-in that records the calls."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from agentstream.clients import CLASSIC, CONSUMER_PROTOCOL
from agentstream.runtime.fetch_start import assign_from_committed, fetch_starts
from agentstream.runtime.processor import Processor

GIVEN = [TopicPartition("tasks", 0), TopicPartition("tasks", 1)]


@dataclass
class _Answered:
    """A TopicPartition as committed() answers it (confluent_kafka's sets ``error`` only itself)."""

    topic: str
    partition: int
    offset: int
    leader_epoch: int | None = None
    error: KafkaError | None = None


class _Member:
    """committed() raises the ``refusals`` first (request-level errors), then answers with
    ``answers`` (partition → offset, or → KafkaError code for a partition-level error)."""

    def __init__(self, answers: dict[int, int | tuple[int]], *refusals: int) -> None:
        self.answers = answers
        self.refusals = list(refusals)
        self.asked = 0
        self.assigned: list[tuple[str, list[tuple[str, int, int]]]] = []
        self.epochs: list[int | None] = []  # the leader epochs of the last assignment

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[_Answered]:
        self.asked += 1
        if self.refusals:
            raise KafkaException(KafkaError(self.refusals.pop(0)))
        answered = []
        for tp in partitions:
            answer = self.answers[tp.partition]
            if isinstance(answer, tuple):
                self.answers[tp.partition] = 5  # refused once, answered the next time
                answered.append(_Answered(tp.topic, tp.partition, -1001, error=KafkaError(answer[0])))
            else:
                answered.append(_Answered(tp.topic, tp.partition, answer, leader_epoch=3))
        return answered

    def resume(self, partitions: list[TopicPartition]) -> None:
        pass  # the processor resumes what it is given (runtime/hold.py); not these tests' concern

    def assign(self, partitions: list[TopicPartition | _Answered]) -> None:
        self.assigned.append(("assign", [(tp.topic, tp.partition, tp.offset) for tp in partitions]))
        self.epochs = [tp.leader_epoch for tp in partitions]

    def incremental_assign(self, partitions: list[TopicPartition | _Answered]) -> None:
        self.assigned.append(("incremental_assign", [(tp.topic, tp.partition, tp.offset) for tp in partitions]))
        self.epochs = [tp.leader_epoch for tp in partitions]


def test_a_refused_offset_fetch_is_asked_again_and_the_partitions_start_at_the_committed_offsets() -> None:
    member = _Member({0: 12, 1: 40}, KafkaError.NOT_COORDINATOR)
    assign_from_committed(member, GIVEN, CONSUMER_PROTOCOL, timeout=10)  # type: ignore[arg-type]
    assert member.asked == 2
    assert member.assigned == [("incremental_assign", [("tasks", 0, 12), ("tasks", 1, 40)])]
    assert member.epochs == [3, 3]  # the committed leader epochs go along


def test_the_classic_protocol_hands_over_the_whole_assignment_with_assign() -> None:
    member = _Member({0: 12, 1: 40})
    assign_from_committed(member, GIVEN, CLASSIC, timeout=10)  # type: ignore[arg-type]
    assert member.assigned == [("assign", [("tasks", 0, 12), ("tasks", 1, 40)])]


def test_a_partition_the_group_never_committed_starts_at_its_first_record() -> None:
    member = _Member({0: -1001, 1: 40})
    starts = fetch_starts(member, GIVEN, timeout=10)  # type: ignore[arg-type]
    assert [(tp.offset, tp.leader_epoch) for tp in starts] == [(OFFSET_BEGINNING, 3), (40, 3)]


def test_a_partition_refused_with_a_moving_coordinator_is_asked_again() -> None:
    member = _Member({0: 12, 1: (KafkaError.UNSTABLE_OFFSET_COMMIT,)})
    starts = fetch_starts(member, GIVEN, timeout=10)  # type: ignore[arg-type]
    assert member.asked == 2 and [tp.offset for tp in starts] == [12, 5]


def test_a_coordinator_that_never_answers_leaves_the_lookup_to_librdkafka() -> None:
    member = _Member({0: 12, 1: 40}, *[KafkaError.NOT_COORDINATOR] * 1000)
    assign_from_committed(member, GIVEN, CONSUMER_PROTOCOL, timeout=0.3)  # type: ignore[arg-type]
    assert 1 < member.asked < 1000
    # without an offset (OFFSET_INVALID): librdkafka asks the coordinator itself
    assert member.assigned == [("incremental_assign", [("tasks", 0, -1001), ("tasks", 1, -1001)])]


def test_a_partition_answered_with_another_error_is_left_to_librdkafka_at_once() -> None:
    member = _Member({0: 12, 1: (KafkaError.TOPIC_AUTHORIZATION_FAILED,)})
    assign_from_committed(member, GIVEN, CLASSIC, timeout=10)  # type: ignore[arg-type]
    assert member.asked == 1
    assert member.assigned == [("assign", [("tasks", 0, 12), ("tasks", 1, -1001)])]


def test_another_request_error_leaves_the_lookup_to_librdkafka_at_once() -> None:
    member = _Member({0: 12, 1: 40}, KafkaError.GROUP_AUTHORIZATION_FAILED)
    assign_from_committed(member, GIVEN, CLASSIC, timeout=10)  # type: ignore[arg-type]
    assert member.asked == 1
    assert member.assigned == [("assign", [("tasks", 0, -1001), ("tasks", 1, -1001)])]


def test_a_stop_ends_the_wait_for_a_moving_coordinator() -> None:
    member = _Member({0: 12, 1: 40}, *[KafkaError.NOT_COORDINATOR] * 1000)
    assign_from_committed(member, GIVEN, CLASSIC, timeout=600,  # type: ignore[arg-type]
                          should_stop=lambda: member.asked >= 2)
    assert member.asked == 2
    assert member.assigned == [("assign", [("tasks", 0, -1001), ("tasks", 1, -1001)])]


def test_an_unknown_group_protocol_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'cooperative'.*classic, consumer"):
        assign_from_committed(_Member({}), GIVEN, "cooperative")  # type: ignore[arg-type]


def test_an_empty_assignment_asks_nothing() -> None:
    member = _Member({})
    assign_from_committed(member, [], CONSUMER_PROTOCOL, timeout=10)  # type: ignore[arg-type]
    assert member.asked == 0 and member.assigned == []


def test_the_processor_takes_partitions_at_their_starts_live_and_not_ready_meanwhile(monkeypatch: Any) -> None:
    processor = Processor("takes", "localhost:9", "takes", "unused-state-dir")  # no I/O until run()
    monkeypatch.setattr(processor, "_on_loop", lambda coro: coro.close())  # restores nothing
    verdicts = []

    class _Watched(_Member):
        def committed(self, partitions: list[TopicPartition], timeout: float) -> list[_Answered]:
            verdicts.append((processor.health.liveness().ok, processor.health.readiness().ok))
            return super().committed(partitions, timeout)

    member = _Watched({0: 12, 1: 40})
    processor.health.restore_started()
    processor.health.restore_finished()  # assigned before: ready
    processor.health._last_poll = time.monotonic() - 10 * processor.health.stall_s  # a long wait for the coordinator
    processor._assign_callback(member, GIVEN)  # type: ignore[arg-type]
    assert member.assigned == [("assign", [("tasks", 0, 12), ("tasks", 1, 40)])]
    assert verdicts == [(True, False)] and processor.health.readiness().ok


def test_a_stopping_processor_leaves_the_assignment_to_the_binding(monkeypatch: Any) -> None:
    # close() serves an assignment queued before it, and turns any assign into none; asking
    # the coordinator then would wait on a group that is leaving.
    processor = Processor("stops", "localhost:9", "stops", "unused-state-dir")
    monkeypatch.setattr(processor, "_on_loop", lambda coro: coro.close())
    member = _Member({0: 12, 1: 40})
    processor.stop()
    processor._assign_callback(member, GIVEN)  # type: ignore[arg-type]
    assert member.asked == 0 and member.assigned == []
