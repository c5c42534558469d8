"""Which offset-commit failures a worker survives (the records are processed again later)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from agentstream.runtime.offsets import commit_refusal_is_transient


@pytest.mark.parametrize("code", [
    KafkaError.UNKNOWN_MEMBER_ID,  # seen when the coordinator's broker was SIGKILLed (test_broker_failure)
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.STALE_MEMBER_EPOCH,
    KafkaError._TRANSPORT,
])
def test_group_and_coordinator_refusals_are_transient(code: int) -> None:
    assert commit_refusal_is_transient(KafkaError(code))


@pytest.mark.parametrize("code", [
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.OFFSET_METADATA_TOO_LARGE,
])
def test_authorization_and_misuse_stop_the_worker(code: int) -> None:
    assert not commit_refusal_is_transient(KafkaError(code))


def test_a_fatal_error_is_never_transient() -> None:
    assert not commit_refusal_is_transient(KafkaError(KafkaError.UNKNOWN_MEMBER_ID, fatal=True))
