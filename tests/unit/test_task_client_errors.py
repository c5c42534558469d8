"""A record the broker does not take is the same answer on both transports
(broker_refusal.py): 503 ``broker_unavailable`` to retry when it was not acknowledged in
time, 500 ``broker_refused`` when the broker refused it for good; the Kafka client raises
it as a TaskClientError, the gateway answers it (tests/unit/test_gateway_problems.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from agentstream.client import SubmitError, Submitter
from agentstream.kafka_client import _broker_unavailable
from agentstream.runtime.errors import CheckpointError
from agentstream.task_client import TaskClientError

TASKS = SimpleNamespace(topic=lambda: "tasks", partition=lambda: 2)


class _Producer:
    """Reports nothing left in its queue: the deliveries were reported before the flush."""

    def flush(self, timeout: float) -> int:
        return 0


def _submitter() -> Submitter:
    """A Submitter past its start-up (which asks the broker for the tasks topic)."""
    submitter = Submitter.__new__(Submitter)
    submitter._bootstrap, submitter._producer, submitter._errors = "broker:9092", _Producer(), []
    return submitter


def _refusal_of(error: Exception) -> TaskClientError:
    with pytest.raises(TaskClientError) as raised, _broker_unavailable():
        raise error
    return raised.value


def _flushed_after(code: int) -> Any:
    submitter = _submitter()
    submitter._delivered(KafkaError(code, "refused"), TASKS)
    with pytest.raises(SubmitError) as raised:
        submitter.flush()
    submitter.flush()  # the next flush reports only what was sent since: nothing
    return raised.value


@pytest.mark.parametrize("error", [SubmitError("task not acknowledged"), CheckpointError("decision not acknowledged")])
def test_a_record_not_acknowledged_without_a_broker_error_is_a_503(error: Exception) -> None:
    refusal = _refusal_of(error)
    assert (refusal.status, refusal.code, refusal.retry_after) == (503, "broker_unavailable", 5.0)
    assert str(error) in refusal.message


def test_a_submitted_task_that_timed_out_is_a_503_and_the_next_flush_reports_nothing_old() -> None:
    error = _flushed_after(KafkaError._MSG_TIMED_OUT)
    assert "tasks[2]" in str(error)
    assert (_refusal_of(error).status, _refusal_of(error).code) == (503, "broker_unavailable")


@pytest.mark.parametrize("code", [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED])
def test_a_submitted_task_the_broker_refused_for_good_is_a_500_asking_no_retry(code: int) -> None:
    refusal = _refusal_of(_flushed_after(code))
    assert (refusal.status, refusal.code, refusal.retry_after) == (500, "broker_refused", None)
    assert KafkaError(code).name() in refusal.message
