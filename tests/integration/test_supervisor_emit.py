"""A supervisor whose emission of a result fails sends the task into its retry chain at
once, instead of leaving it for the partition's next owner.

The fault is real: a topic's ``max.message.bytes`` below the size of the record the
supervisor writes, so the broker refuses it (MSG_SIZE_TOO_LARGE, a permanent error).
The supervisor runs in-process on the real broker; no other worker is needed, as the
test writes the specialist results itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from agentstream.clients import admin_config
from agentstream.events import SPECIALIST_RESULT, now_ms
from agentstream.runtime import new_serving_loop
from agentstream.serde import SchemaSet
from agentstream.service import Service
from agentstream.settings import WorkerSettings
from agentstream.supervisor.app import build_supervisor
from agentstream.topology import Topology, load_topology
from agentstream.topology_admin import apply

SCHEMAS = SchemaSet.load()
LIMIT = 4096  # max.message.bytes of the topic that refuses
BIG = "x" * (2 * LIMIT)  # an output the refusing topic cannot take
WAIT_S = 30.0  # far less than a rebalance would take to come: nothing causes one here

Records = list[tuple[str, dict[str, Any]]]

pytestmark = pytest.mark.kafka_only  # a topic's max.message.bytes is enforced by Apache Kafka


def _refuse_big_records(bootstrap: str, topic: str) -> None:
    admin = AdminClient(admin_config(bootstrap))
    entry = ConfigEntry("max.message.bytes", str(LIMIT), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


class Supervisor:
    """A supervisor service running on a thread of its own, until closed."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=new_serving_loop) as runner:  # as `agentstream worker` runs
            runner.run(self.service.processor.run())

    def close(self) -> None:
        self.service.processor.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the supervisor did not stop"


@pytest.fixture
def topology(kafka_bootstrap: str) -> Topology:
    topology = load_topology(None, prefix=f"e{uuid.uuid4().hex[:8]}")
    apply(AdminClient(admin_config(kafka_bootstrap)), topology)
    return topology


@pytest.fixture
def start_supervisor(kafka_bootstrap: str, topology: Topology, tmp_path: Path) -> Iterator[Callable[[], Supervisor]]:
    started: list[Supervisor] = []

    def start() -> Supervisor:
        settings = WorkerSettings(bootstrap=kafka_bootstrap, state_dir=tmp_path, prefix=topology.prefix)
        started.append(Supervisor(build_supervisor(settings, topology, SCHEMAS)))
        return started[-1]

    yield start
    for supervisor in started:
        supervisor.close()


def _specialist_result(session: str, output: str) -> dict[str, Any]:
    now = now_ms()
    return {
        "task_id": f"task-{uuid.uuid4().hex[:12]}", "session_id": session, "tenant_id": "it", "agent_type": "billing",
        "route": ["billing"], "status": "COMPLETED", "output": output, "error": None, "tools_used": [],
        "usage": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "llm_calls": 1, "tool_calls": 0, "retries": 0},
        "behavior_version": "test", "tier": "standard", "model": "scripted:default",
        "submitted_at": now, "started_at": now, "finished_at": now,
    }


def _send_results(bootstrap: str, topology: Topology, results: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for result in results:
        producer.produce(topology.topic("supervisor"), SCHEMAS.encode(SPECIALIST_RESULT, result), result["session_id"].encode())
    assert producer.flush(30) == 0


def _run_with_a_refusing_topic(
    bootstrap: str, topology: Topology, start_supervisor: Callable[[], Supervisor], refusing: str
) -> dict[str, Any]:
    """Start a supervisor with ``refusing`` too small for a big result; send it a big
    result and return it."""
    _refuse_big_records(bootstrap, refusing)
    start_supervisor()
    big = _specialist_result(f"s-{uuid.uuid4().hex[:6]}", BIG)
    _send_results(bootstrap, topology, [big])
    return big


def _session_goes_on(bootstrap: str, topology: Topology, session: str) -> Records:
    """A later, small result of ``session`` is published (sent only now: one batch with the
    big record would be refused with it); the records read up to it."""
    after = _specialist_result(session, "done")
    _send_results(bootstrap, topology, [after])
    records = _read_until(bootstrap, topology, lambda rs: bool(_of(rs, "TaskResult", after["task_id"])),
                          "the next result of the session")
    assert [r["status"] for r in _of(records, "TaskResult", after["task_id"])] == ["COMPLETED"]
    return records


def _read_until(bootstrap: str, topology: Topology, done: Callable[[Records], bool], what: str) -> Records:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topology.topic(t), p, 0) for t in ("results", "dlq")
                     for p in range(topology.topic_spec(t).partitions)])
    records: Records = []
    deadline = time.monotonic() + WAIT_S
    try:
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {WAIT_S:.0f} s waiting for {what}; read {records}")
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append(SCHEMAS.decode(msg.value()))
    finally:
        consumer.close()
    return records


def _of(records: Records, name: str, task_id: str) -> list[dict[str, Any]]:
    return [r for n, r in records if n == name and r["task_id"] == task_id]


def test_a_refused_marker_dead_letters_the_task_at_once_and_its_session_goes_on(
    kafka_bootstrap: str, topology: Topology, start_supervisor: Callable[[], Supervisor],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The marker holds the result: too big for the dedupe changelog, while the results
    # topic would take it. The marker is never written, so a FAILED result is safe.
    big = _run_with_a_refusing_topic(kafka_bootstrap, topology, start_supervisor,
                                     topology.changelog_topic("supervisor", "dedupe"))
    records = _read_until(
        kafka_bootstrap, topology,
        lambda rs: bool(_of(rs, "TaskResult", big["task_id"]) and _of(rs, "DeadLetter", big["task_id"])),
        "the refused task's FAILED result and dead letter")
    failed = _of(records, "TaskResult", big["task_id"])
    assert [(r["status"], r["error"]["code"]) for r in failed] == [("FAILED", "DEAD_LETTERED")]
    assert "MSG_SIZE_TOO_LARGE" in failed[0]["error"]["message"]
    (letter,) = _of(records, "DeadLetter", big["task_id"])
    assert letter["stage"] == "supervisor" and letter["error_class"] == "PERMANENT" and letter["attempts"] == 1
    # The FAILED result went out with its (small) marker: the specialist result read again,
    # as after a crash before its offset was committed, finds the task decided.
    with caplog.at_level(logging.INFO, logger="agentstream.supervisor.app"):
        _send_results(kafka_bootstrap, topology, [big])
        _read_until(  # the log line may come before the first record is read
            kafka_bootstrap, topology, lambda rs: _repeat_ignored(caplog, big) or len(_of(rs, "DeadLetter", big["task_id"])) > 1,
            "the copy ignored, or dead-lettered again")
    records = _session_goes_on(kafka_bootstrap, topology, big["session_id"])  # everything, from the start
    assert len(_of(records, "DeadLetter", big["task_id"])) == 1 and len(_of(records, "TaskResult", big["task_id"])) == 1
    assert _repeat_ignored(caplog, big)


def _repeat_ignored(caplog: pytest.LogCaptureFixture, result: dict[str, Any]) -> bool:
    return any(f"task {result['task_id']} already has its result; repeat" in line for line in caplog.messages)


def test_a_refused_result_after_its_marker_is_dead_lettered_at_once_without_a_second_result(
    kafka_bootstrap: str, topology: Topology, start_supervisor: Callable[[], Supervisor]
) -> None:
    # The marker is written, then the results topic refuses the result. Whether a result
    # reached the topic is the marker's to settle, so no FAILED result is published.
    big = _run_with_a_refusing_topic(kafka_bootstrap, topology, start_supervisor, topology.topic("results"))
    records = _read_until(kafka_bootstrap, topology, lambda rs: bool(_of(rs, "DeadLetter", big["task_id"])),
                          "the refused task's dead letter")
    (letter,) = _of(records, "DeadLetter", big["task_id"])
    assert letter["stage"] == "supervisor" and letter["error_class"] == "PERMANENT"
    assert "MSG_SIZE_TOO_LARGE" in letter["error_message"]
    # Same session, same results partition: a result of the big task would come first.
    assert _of(_session_goes_on(kafka_bootstrap, topology, big["session_id"]), "TaskResult", big["task_id"]) == []
