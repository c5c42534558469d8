"""A record the broker does not acknowledge is the same answer on both transports: the
gateway's 503 ``broker_unavailable``, raised by the Kafka client as a TaskClientError."""

from __future__ import annotations

import pytest

from agentstream.client import SubmitError
from agentstream.kafka_client import _broker_unavailable
from agentstream.runtime.errors import CheckpointError
from agentstream.task_client import TaskClientError


@pytest.mark.parametrize("error", [SubmitError("task not acknowledged"), CheckpointError("decision not acknowledged")])
def test_an_unacknowledged_record_is_a_503(error: Exception) -> None:
    with pytest.raises(TaskClientError) as raised, _broker_unavailable():
        raise error
    assert (raised.value.status, raised.value.code) == (503, "broker_unavailable")
    assert str(error) in raised.value.message
