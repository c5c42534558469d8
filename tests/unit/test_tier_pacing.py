"""runtime.tier_pacing: retry tiers fetched in windows, held partitions left alone."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agentstream.runtime import tier_pacing
from agentstream.runtime.tier_pacing import EVERY_S, OPEN_S, TierPacing, paces_tiers

TIER = "tasks.v1.retry-1"


class _Consumer:
    """What the pacing calls of a consumer: its assignment, pause and resume."""

    def __init__(self, assigned: list[tuple[str, int]]) -> None:
        self.assigned = assigned
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic, partition in self.assigned]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("pause", [(p.topic, p.partition) for p in partitions]))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", [(p.topic, p.partition) for p in partitions]))


class _Refusing(_Consumer):
    """A consumer whose pause and resume fail, as librdkafka's may in a bad state."""

    def pause(self, partitions: list[TopicPartition]) -> None:
        super().pause(partitions)
        raise KafkaException(KafkaError(KafkaError._STATE))

    def resume(self, partitions: list[TopicPartition]) -> None:
        super().resume(partitions)
        raise KafkaException(KafkaError(KafkaError._STATE))


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pacing(held: set[tuple[str, int]] | None = None) -> tuple[TierPacing, _Clock]:
    clock = _Clock()
    return TierPacing([TIER], lambda tp: tp in (held or set()), clock=clock), clock


def test_the_tiers_are_paused_after_the_first_window_and_resumed_every_period() -> None:
    pacing, clock = _pacing()
    consumer: Any = _Consumer([("tasks.v1", 0), (TIER, 0), (TIER, 1)])
    pacing.before_poll(consumer)
    assert consumer.calls == []  # the first window is open: assigned partitions are fetched
    clock.now += OPEN_S
    pacing.before_poll(consumer)
    assert consumer.calls == [("pause", [(TIER, 0), (TIER, 1)])]  # the input is never paused
    clock.now += EVERY_S - OPEN_S - 0.01
    pacing.before_poll(consumer)
    assert len(consumer.calls) == 1  # closed until the period is up
    clock.now += 0.01
    pacing.before_poll(consumer)
    assert consumer.calls[-1] == ("resume", [(TIER, 0), (TIER, 1)])
    clock.now += OPEN_S
    pacing.before_poll(consumer)
    assert consumer.calls[-1] == ("pause", [(TIER, 0), (TIER, 1)])


def test_a_held_partition_is_left_to_its_hold() -> None:
    # A pause would save the position after the records returned, past the held record
    # its hold rewound to.
    pacing, clock = _pacing(held={(TIER, 1)})
    consumer: Any = _Consumer([(TIER, 0), (TIER, 1)])
    clock.now += OPEN_S
    pacing.before_poll(consumer)
    clock.now += EVERY_S
    pacing.before_poll(consumer)
    assert consumer.calls == [("pause", [(TIER, 0)]), ("resume", [(TIER, 0)])]


def test_each_window_names_the_partitions_assigned_then() -> None:
    pacing, clock = _pacing()
    consumer: Any = _Consumer([(TIER, 0)])
    clock.now += OPEN_S
    pacing.before_poll(consumer)
    consumer.assigned = [(TIER, 2)]  # a rebalance: 0 revoked, 2 assigned (maybe still paused)
    clock.now += EVERY_S
    pacing.before_poll(consumer)
    assert consumer.calls == [("pause", [(TIER, 0)]), ("resume", [(TIER, 2)])]


def test_nothing_assigned_of_the_tiers_calls_nothing() -> None:
    pacing, clock = _pacing()
    consumer: Any = _Consumer([("tasks.v1", 0)])
    for _ in range(4):
        clock.now += EVERY_S
        pacing.before_poll(consumer)
    assert consumer.calls == []


def test_a_refused_pause_or_resume_does_not_stop_the_poll_and_the_next_window_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pacing, clock = _pacing()
    consumer: Any = _Refusing([(TIER, 0)])
    clock.now += OPEN_S
    pacing.before_poll(consumer)  # raising here would end the worker's poll loop
    clock.now += EVERY_S
    pacing.before_poll(consumer)
    assert consumer.calls == [("pause", [(TIER, 0)]), ("resume", [(TIER, 0)])]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "could not pause the retry tiers' partitions", "could not resume the retry tiers' partitions"]


@pytest.mark.parametrize(("fetch_wait_ms", "paced"), [(20, True), (tier_pacing.PACED_UP_TO_FETCH_WAIT_MS, True), (500, False)])
def test_only_a_short_fetch_wait_paces(fetch_wait_ms: int, paced: bool) -> None:
    assert paces_tiers(fetch_wait_ms) is paced
