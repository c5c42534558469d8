"""A task's SSE stream when the gateway's view reads task-events behind results: the stream
must not end with the result before the view has the events produced before it.

The records are produced by the test (no workers run) while the gateway is paused: a backlog
of another task's events on every task-events partition, then the task's own two progress
events, then its result (no terminal event, so only the gate's grace path can end the
stream). The view reads the result at once and the task's events only after the backlog,
seconds later; a stream that ends 2 s after it saw the result (the rule before this test)
sends the result alone.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from agentstream.clients import producer_config
from agentstream.events import TASK_EVENT, TASK_RESULT, task_event, task_result

from .cli import cli_env
from .gateway_harness import GatewayProcess, TenantsFile, sse_events
from .harness import wait_for
from .test_durable import SCHEMAS, DurableStack

# Read by the view in well over the 2-s grace after the result (one partition with 150,000
# was not: the view read it within 2 s of the result in a trial on this machine).
BACKLOG_PER_PARTITION = 60_000


@pytest.fixture()
def stack_and_gateway(bootstrap: str, tmp_path: Path) -> Iterator[tuple[DurableStack, GatewayProcess, TenantsFile]]:
    stack = DurableStack(bootstrap, tmp_path, latency="0")  # topics only: the test writes every record
    tenants = TenantsFile.write(tmp_path / "tenants.yaml", {"acme": {}})
    env = cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=stack.prefix,
                  AGENTSTREAM_STATE_DIR=str(tmp_path / "gw"))
    gateway = GatewayProcess(env, tenants.path)
    try:
        yield stack, gateway, tenants
    finally:
        assert gateway.stop() == 0, gateway.process.tail()


def _produce_backlog_then_the_task(stack: DurableStack, task: dict[str, str]) -> None:
    producer = Producer(producer_config(stack.bootstrap, {"linger.ms": 50}))
    events = stack.topology.topic("task_events")
    other = {"task_id": f"other-{uuid.uuid4().hex}", "session_id": "other"}
    filler = SCHEMAS.encode(TASK_EVENT, task_event(other, "billing", "TEXT", "RUNNING", "x" * 100))
    partitions = stack.topology.topic_spec("task_events").partitions
    for partition in range(partitions):
        for _ in range(BACKLOG_PER_PARTITION):
            _produce(producer, events, filler, partition)
    for kind in ("ROUTED", "MODEL_CALL"):  # the partition does not matter to the view: the last one
        _produce(producer, events, SCHEMAS.encode(TASK_EVENT, task_event(task, "billing", kind, "RUNNING")), partitions - 1)
    assert producer.flush(60) == 0
    result = task_result(task, "COMPLETED", output="done", agents=["billing"])
    producer.produce(stack.topology.topic("results"), SCHEMAS.encode(TASK_RESULT, result), task["session_id"])
    assert producer.flush(30) == 0


def _produce(producer: Producer, topic: str, value: bytes, partition: int) -> None:
    while True:
        try:
            producer.produce(topic, value, partition=partition)
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.05)


def _found(response: httpx.Response, into: list[dict[str, object]]) -> bool:
    if response.status_code == 200:
        into.append(response.json())
    return bool(into)


def test_the_result_waits_for_events_the_view_reads_after_it(
        stack_and_gateway: tuple[DurableStack, GatewayProcess, TenantsFile]) -> None:
    stack, gateway, tenants = stack_and_gateway
    task = {"task_id": f"t-{uuid.uuid4().hex}", "session_id": f"s-{uuid.uuid4().hex}", "tenant_id": "acme",
            "submitted_at": None}
    # Paused while the records are produced, the view then finds one result and the backlog
    # to read: it reads the result at once and the task's events after the backlog. Running,
    # it kept up with the production once (CI, Tansu pass) and read them with the result.
    os.kill(gateway.process.proc.pid, signal.SIGSTOP)
    try:
        _produce_backlog_then_the_task(stack, task)
    finally:
        os.kill(gateway.process.proc.pid, signal.SIGCONT)
    headers = tenants.headers("acme")
    with gateway.client() as http:
        url = f"/v1/tasks/{task['task_id']}"
        seen: list[dict[str, object]] = []
        wait_for(lambda: _found(http.get(url, headers=headers), seen), 60, "the task's result in the view")
        assert seen[0]["events"] == 0, f"the view read the task's events with its result: no lag to test {seen[0]}"
        with http.stream("GET", f"{url}/events", headers=headers, timeout=httpx.Timeout(120)) as response:
            got = [(event.kind, event.data.get("kind")) for event in sse_events(response)]
    assert got == [("progress", "ROUTED"), ("progress", "MODEL_CALL"), ("result", None)], got
