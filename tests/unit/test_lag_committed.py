"""runtime/lag.committed_offsets: a coordinator that moved is asked again; other errors are not."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agentstream.runtime.lag import committed_offsets

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
