"""One client shape over two transports: the same scenario, written against the TaskClient
protocol, runs on ``agentstream.Client`` (Kafka itself) and on ``agentstream.GatewayClient``
(HTTP to the real gateway process), on a real broker with real workers (router, billing
with a held refund tool, supervisor). It covers idempotency, the event stream and its
resume, approving over either transport, and a cancel while a task waits: its approval
leaves the pending list (``GET /v1/approvals`` over HTTP), though no decision record closes it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream import AsyncClient, AsyncGatewayClient, Client, GatewayClient
from agentstream.settings import BOOTSTRAP_ENV, PREFIX_ENV, STATE_DIR_ENV, TOPOLOGY_ENV
from agentstream.task_client import AsyncTaskClient, TaskClient, TaskClientError
from agentstream.topology import load_topology

from .harness import wait_for
from .test_gateway import Running, running  # noqa: F401  (the module's fixture: workers and a gateway)

TENANT = "acme"
KAFKA_SUBJECT = "kafka-ops"
GATEWAY_SUBJECT = "key:acme-operator"  # the operator key's name, as the gateway names its holder


def _kafka(running: Running, **options: Any) -> Client:
    stack = running.desk.stack
    topology = load_topology(stack.topology_path, prefix=stack.prefix)
    return Client(running.desk.bootstrap, topology, tenant_id=TENANT, subject=KAFKA_SUBJECT, **options)


def _gateway(running: Running) -> GatewayClient:
    return GatewayClient(running.gateway.url, api_key=running.tenants.keys[(TENANT, "operator")])


@pytest.fixture(params=["kafka", "gateway"])
def transport(request: pytest.FixtureRequest, running: Running) -> Iterator[tuple[TaskClient, str]]:  # noqa: F811
    """A client of either transport, with the name its decisions and cancels carry."""
    client: TaskClient = _kafka(running) if request.param == "kafka" else _gateway(running)
    try:
        yield client, KAFKA_SUBJECT if request.param == "kafka" else GATEWAY_SUBJECT
    finally:
        client.close()


def _pending_of(client: TaskClient, task_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []
    wait_for(lambda: bool(found.extend(a for a in client.approvals() if a["task_id"] == task_id) or found), 60,
             f"the approval of {task_id} listed as pending")
    return found[0]


def scenario(client: TaskClient, who: str) -> None:
    """What a caller does, written once against the protocol."""
    key = f"order-{uuid.uuid4().hex}"
    task_id = client.submit("Please check invoice INV-1002 for me", agent="billing", idempotency_key=key)
    assert client.submit("Please check invoice INV-1002 for me", agent="billing", idempotency_key=key) == task_id
    events = list(client.events(task_id))
    assert events[-1].kind == "result" and events[-1].data["state"] == "COMPLETED", events[-1]
    assert [e.kind for e in events].count("result") == 1 and len({e.id for e in events}) == len(events)
    assert list(client.events(task_id, after=events[1].id)) == events[2:], "a gap or a repeat on resume"
    assert list(client.events(task_id, after=events[-1].id)) == []
    assert client.result(task_id, timeout=5)["result"] == client.task(task_id)["result"]
    assert client.task(task_id)["result"]["output"]

    held = client.submit("Please refund payment INV-1004", agent="billing")
    request = _pending_of(client, held)
    assert client.approve(request["approval_id"], "ok") == {
        "approval_id": request["approval_id"], "task_id": held, "decision": "approve", "who": who}
    assert client.result(held, timeout=90)["state"] == "COMPLETED"
    with pytest.raises(TaskClientError) as twice:
        client.deny(request["approval_id"], "too late")
    assert twice.value.status == 409  # already decided (or, once the task ended, closed)

    waiting = client.submit("Please refund payment INV-1003", agent="billing")
    request = _pending_of(client, waiting)
    assert client.cancel(waiting, "customer withdrew") == {"task_id": waiting, "requested_by": who}
    assert client.result(waiting, timeout=90)["state"] == "CANCELED"
    assert [a for a in client.approvals() if a["task_id"] == waiting] == [], "a canceled wait listed as pending"
    with pytest.raises(TaskClientError) as closed:
        client.approve(request["approval_id"])
    assert (closed.value.status, closed.value.code) == (409, "approval_closed")
    with pytest.raises(TaskClientError) as ended:
        client.cancel(waiting)
    assert (ended.value.status, ended.value.code) == (409, "task_ended")

    with pytest.raises(TaskClientError) as missing:
        client.task("t-nothing")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(TaskClientError) as unknown:
        client.submit("hello", agent="sales")
    assert (unknown.value.status, unknown.value.code) == (422, "unknown_agent")


def test_one_scenario_runs_on_either_transport(transport: tuple[TaskClient, str]) -> None:
    client, who = transport
    scenario(client, who)


def test_both_transports_see_one_task_for_one_key_and_the_same_events(running: Running) -> None:  # noqa: F811
    """A key used over Kafka and then over HTTP is one task (the same id derivation); both
    transports answer its state and its events, ids included, alike."""
    key = f"both-{uuid.uuid4().hex}"
    with _kafka(running) as kafka, _gateway(running) as gateway:
        task_id = kafka.submit("Please check invoice INV-1001 for me", agent="billing", idempotency_key=key)
        assert gateway.submit("Please check invoice INV-1001 for me", agent="billing", idempotency_key=key) == task_id
        over_kafka = list(kafka.events(task_id))
        assert list(gateway.events(task_id)) == over_kafka
        # Each view catches up on its own (a progress event may follow the result): they converge.
        wait_for(lambda: kafka.task(task_id) == gateway.task(task_id), 30, "both transports showing one view")
    results = [r for r in running.desk.records("results", "TaskResult") if r["task_id"] == task_id]
    assert len(results) == 1, results


def test_the_async_clients_share_the_shape_too(running: Running) -> None:  # noqa: F811
    async def follow(client: AsyncTaskClient) -> list[str]:
        try:
            task_id = await client.submit("Please check invoice INV-1003 for me", agent="billing")
            assert (await client.result(task_id, timeout=90))["state"] == "COMPLETED"
            kinds = [event.kind async for event in client.events(task_id)]
            with pytest.raises(TaskClientError) as missing:
                await client.task("t-nothing")
            assert missing.value.status == 404
            return kinds
        finally:
            await client.aclose()

    stack = running.desk.stack
    kafka = AsyncClient(running.desk.bootstrap, load_topology(stack.topology_path, prefix=stack.prefix),
                        tenant_id=TENANT)
    gateway = AsyncGatewayClient(running.gateway.url, api_key=running.tenants.keys[(TENANT, "submitter")])
    for kinds in (asyncio.run(follow(kafka)), asyncio.run(follow(gateway))):
        assert kinds[-1] == "result" and kinds.count("result") == 1 and "progress" in kinds


def test_a_client_from_the_environment_finds_what_the_commands_find(running: Running, tmp_path: Path,  # noqa: F811
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``Client.from_env`` takes the broker, topology and prefix from the commands' variables,
    keeps its view under ``<state>/client`` and removes it on close."""
    for name, value in running.env.items():
        if name in (BOOTSTRAP_ENV, TOPOLOGY_ENV, PREFIX_ENV):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    with _gateway(running) as gateway:
        task_id = gateway.submit("Please check invoice INV-1004 for me", agent="billing")
        with Client.from_env(tenant_id=TENANT) as kafka:
            assert kafka.result(task_id, timeout=90)["result"] == gateway.result(task_id, timeout=90)["result"]
            assert len(list((tmp_path / "client").iterdir())) == 1  # its view's directory
        assert list((tmp_path / "client").iterdir()) == []
