"""runtime/committed.committed_offsets: a coordinator that moved is asked again; other errors are not."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agentstream.runtime.committed import committed_offsets

PARTITIONS = [TopicPartition("in", 0), TopicPartition("in", 1)]


class _Probe:
    """Answers committed() with the errors given, then with the partitions at offset 7."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in partitions]


def test_a_moving_coordinator_is_asked_again_until_it_answers() -> None:
    probe = _Probe(KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    answered = committed_offsets(probe, PARTITIONS, timeout=10)  # type: ignore[arg-type]
    assert [tp.offset for tp in answered] == [7, 7] and probe.calls == 3


def test_any_other_error_is_raised_at_once() -> None:
    probe = _Probe(KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException) as raised:
        committed_offsets(probe, PARTITIONS, timeout=10)  # type: ignore[arg-type]
    assert raised.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED and probe.calls == 1


def test_a_coordinator_still_moving_at_the_timeout_is_raised() -> None:
    probe = _Probe(*[KafkaError.NOT_COORDINATOR] * 1000)
    with pytest.raises(KafkaException) as raised:
        committed_offsets(probe, PARTITIONS, timeout=0.3)  # type: ignore[arg-type]
    assert raised.value.args[0].code() == KafkaError.NOT_COORDINATOR and 1 < probe.calls < 1000


class _Answered:
    """A partition as committed() answers it with a partition-level error."""

    def __init__(self, partition: int, code: int) -> None:
        self.topic, self.partition, self.offset, self.error = "in", partition, -1001, KafkaError(code)


class _PartlyMoving(_Probe):
    """Answers partition 1 with ``code`` the first time."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        answered = super().committed(partitions, timeout)
        if self.calls == 1:
            answered[1] = _Answered(1, self.code)  # type: ignore[call-overload]
        return answered


def test_a_partition_whose_coordinator_moved_is_asked_again() -> None:
    probe = _PartlyMoving(KafkaError.UNSTABLE_OFFSET_COMMIT)
    answered = committed_offsets(probe, PARTITIONS, timeout=10)  # type: ignore[arg-type]
    assert [tp.offset for tp in answered] == [7, 7] and probe.calls == 2


def test_another_partition_error_is_left_on_its_partition() -> None:
    probe = _PartlyMoving(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    answered = committed_offsets(probe, PARTITIONS, timeout=10)  # type: ignore[arg-type]
    error = answered[1].error
    assert probe.calls == 1 and error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_partition_still_moving_at_the_timeout_is_raised_by_name() -> None:
    class _AlwaysMoving(_Probe):
        def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
            answered = super().committed(partitions, timeout)
            answered[1] = _Answered(1, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)  # type: ignore[call-overload]
            return answered

    with pytest.raises(KafkaException, match=r"in\[1\]"):
        committed_offsets(_AlwaysMoving(), PARTITIONS, timeout=0.3)  # type: ignore[arg-type]
