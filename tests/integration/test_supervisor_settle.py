"""A supervisor killed after its result was acknowledged and before the task's terminal
TaskEvent left its producer: the next owner of the partition sends the event.

The broker is set up as that crash leaves it: the TaskResult on the results topic, the
task's "emitting" marker (holding that result) in the supervisor's dedupe changelog, and
no TaskEvent. A supervisor started on it settles the marker (supervisor/emitter.py): it
finds the result published, so it sends no second result, and it sends the STATE event
that would otherwise never come (a stream waiting for it, gateway/stream_gate.py, would
wait its grace out and the task's last state would be missing from its events).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from agentstream import jsoncodec
from agentstream.clients import producer_config
from agentstream.events import TASK_EVENT, TASK_RESULT
from agentstream.supervisor.app import final_result
from agentstream.supervisor.emitter import EMITTING, SENT
from agentstream.topology import Topology
from tests.integration.harness import read_all, wait_for
from tests.integration.test_supervisor_emit import (  # noqa: F401 (fixtures)
    SCHEMAS, Supervisor, _specialist_result, start_supervisor, topology,
)


@pytest.fixture
def kafka_bootstrap(bootstrap: str) -> str:
    """The session's broker, Tansu or Apache Kafka: test_supervisor_emit's fixtures
    (``topology``, ``start_supervisor``) run on it, as nothing here needs Kafka alone."""
    return bootstrap


def _produce(bootstrap: str, topic: str, key: str, value: bytes, partition: int = -1) -> int:
    """Produce one record, acknowledged; the partition it landed on."""
    landed: list[int] = []
    producer = Producer(producer_config(bootstrap))
    producer.produce(topic, value, key.encode(), partition=partition,
                     on_delivery=lambda err, msg: landed.append(-1 if err else msg.partition() or 0))
    assert producer.flush(30) == 0 and landed and landed[0] >= 0, f"{topic}: not acknowledged"
    return landed[0]


def _left_by_a_crash(bootstrap: str, topology: Topology) -> dict[str, Any]:
    """The result published and its marker still "emitting", as a kill between the result's
    acknowledgement and its terminal event leaves them: the result."""
    specialist = _specialist_result(f"s-{uuid.uuid4().hex[:6]}", "Refunded.")
    final = final_result([specialist], [specialist])
    partition = _produce(bootstrap, topology.topic("results"), final["session_id"], SCHEMAS.encode(TASK_RESULT, final))
    marker = {"state": EMITTING, "result": final, "results_from": 0, "replay": None}
    _produce(bootstrap, topology.changelog_topic("supervisor", "dedupe"), final["task_id"], jsoncodec.dumps(marker),
             partition)
    return final


def _of_task(bootstrap: str, topic: str, schema: str, task_id: str) -> list[dict[str, Any]]:
    records = (SCHEMAS.decode_as(schema, value) for _, value, _ in read_all(bootstrap, topic) if value)
    return [record for record in records if record["task_id"] == task_id]


def test_the_next_owner_sends_the_terminal_event_a_crash_after_the_result_left_unsent(
    bootstrap: str, topology: Topology, start_supervisor: Callable[[], Supervisor]
) -> None:
    final = _left_by_a_crash(bootstrap, topology)
    task_id, events = final["task_id"], topology.topic("task_events")
    start_supervisor()

    def ended() -> bool:
        return any((e["stage"], e["kind"], e["state"]) == ("supervisor", "STATE", "COMPLETED")
                   for e in _of_task(bootstrap, events, TASK_EVENT, task_id))

    wait_for(ended, 60, f"the supervisor's COMPLETED STATE event of {task_id}")
    # The marker is settled "sent", and the result is not published a second time.
    changelog = topology.changelog_topic("supervisor", "dedupe")
    wait_for(lambda: any(key == task_id.encode() and value and json.loads(value)["state"] == SENT
                         for key, value, _ in read_all(bootstrap, changelog)), 60, f"the sent marker of {task_id}")
    published = _of_task(bootstrap, topology.topic("results"), TASK_RESULT, task_id)
    assert [r["output"] for r in published] == [final["output"]]
    (event,) = [e for e in _of_task(bootstrap, events, TASK_EVENT, task_id) if e["kind"] == "STATE"]
    assert event["detail"] == "billing", event
