"""The router enforces the tenants file on tasks produced straight to Kafka: a task of an
unknown tenant, of a tenant over its daily budget, or over its cap of tasks in flight gets
a REJECTED result with the reason, a REJECTED progress event and an audit record.

Every worker is a real process on the real broker; the router runs with ``--tenants`` and
a metrics port, whose tenant ledger gauges tell when its copy of the ledger has read what
a step needs (so the test waits for a condition, never for a time).
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from agentstream.approvals.records import approval_decision
from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.events import now_ms, task_result
from agentstream.serde import SchemaSet
from agentstream.settings import TENANTS_ENV
from agentstream.tenancy import TENANT_BUDGET_SPENT, TENANT_BUSY, TENANT_UNKNOWN

from .cli import cli_env, run
from .harness import free_port, read_all, wait_for
from .test_durable import DurableStack

SCHEMAS = SchemaSet.load()
TENANTS = """
tenants:
  open: {}
  capped: {limits: {max_running_tasks: 1}}
  spender: {limits: {daily_cost_usd: 0.05}}
"""
HELD = "Please issue a refund for INV-1001"  # billing's refund_invoice always waits for a human
QUICK = "Please check invoice INV-1002 for me"
# The router starts on its own (with --tenants and a metrics port), and again in a test.
WORKERS = {"billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]}


class Upstream:
    """Produces tasks (and, for the budget, a priced result) and reads what comes back."""

    def __init__(self, stack: DurableStack, tenants_file: Path) -> None:
        self.stack = stack
        self.tenants_file = tenants_file
        self.metrics_port = free_port()
        self.producer = Producer(producer_config(stack.bootstrap))
        self.results = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"it-{uuid.uuid4().hex}",
                                 "enable.auto.commit": False})
        topic = stack.topology.topic("results")
        self.results.assign([TopicPartition(topic, p, 0) for p in range(stack.topology.topic_spec("results").partitions)])
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def start_router(self) -> None:
        """The router, enforcing the tenants file and serving /metrics (its state directory
        is the same on every start)."""
        self.stack.start("router", "router", "--tenants", str(self.tenants_file), "--metrics-port", str(self.metrics_port))
        self.stack.workers["router"].wait_for_line(r": assigned ", 120)

    def send(self, logical: str, schema: str, record: dict[str, Any]) -> None:
        self.producer.produce(self.stack.topology.topic(logical), SCHEMAS.encode(schema, record), record["session_id"])
        assert self.producer.flush(30) == 0

    def submit(self, text: str, tenant: str) -> dict[str, Any]:
        task = new_task(text, f"s-{uuid.uuid4().hex[:10]}", tenant, requested_agent="billing")
        self.send("tasks", "TaskSubmitted", task)
        return task

    def result(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        def arrived() -> bool:
            while (msg := self.results.poll(0.1)) is not None:
                if msg.error() is None:
                    result = SCHEMAS.decode_as("TaskResult", msg.value())
                    self.seen.setdefault(result["task_id"], []).append(result)
            return task_id in self.seen

        wait_for(arrived, timeout, f"the result of {task_id}")
        return self.seen[task_id][0]

    def records(self, logical: str, schema: str, task_id: str, field: str = "task_id") -> list[dict[str, Any]]:
        values = [value for _, value, _ in read_all(self.stack.bootstrap, self.stack.topology.topic(logical)) if value]
        return [r for r in (SCHEMAS.decode_as(schema, v) for v in values) if r[field] == task_id]

    def gauge(self, name: str, tenant: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            found = re.search(rf'^agentstream_{name}{{tenant="{tenant}"}} (\S+)$', response.read().decode(), re.M)
        return float(found.group(1)) if found else None

    def close(self) -> None:
        self.results.close()


@pytest.fixture(scope="module")
def upstream(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    base = tmp_path_factory.mktemp("tenancy")
    tenants_file = base / "tenants.yaml"
    tenants_file.write_text(TENANTS)
    stack = DurableStack(bootstrap, base, latency="0")
    upstream = Upstream(stack, tenants_file)
    try:
        stack.start_all(WORKERS)
        upstream.start_router()
        yield upstream
    finally:
        upstream.close()
        codes = stack.stop_all()
        assert all(code == 0 for code in codes.values()), f"workers did not stop cleanly: {codes}"


def assert_refused(upstream: Upstream, task: dict[str, Any], code: str, reason: str) -> None:
    """One REJECTED result with ``code``, the REJECTED progress event and the audit record."""
    result = upstream.result(task["task_id"])
    assert (result["status"], result["error"]["code"]) == ("REJECTED", code), result
    assert reason in result["error"]["message"]
    events = upstream.records("task_events", "TaskEvent", task["task_id"])
    assert [(e["stage"], e["state"]) for e in events] == [("router", "REJECTED")]
    assert reason in events[0]["detail"]
    audits = upstream.records("audit", "AuditRecord", task["task_id"], field="target_id")
    assert [(a["tenant_id"], a["subject"], a["action"], a["outcome"], a["source"]) for a in audits] == [
        (task["tenant_id"], "router", "task.reject", "refused", "router")]
    assert audits[0]["detail"].startswith(f"{code}: ")


def test_a_task_of_an_unknown_tenant_is_rejected_once(upstream: Upstream) -> None:
    task = upstream.submit(QUICK, "nobody")
    upstream.send("tasks", "TaskSubmitted", task)  # a repeat: still one result
    assert_refused(upstream, task, TENANT_UNKNOWN, "tenant 'nobody' is not in the tenants file")
    # A later task of the same session travels the same partition behind the repeat.
    sentinel = new_task(QUICK, task["session_id"], "open", requested_agent="billing")
    upstream.send("tasks", "TaskSubmitted", sentinel)
    assert upstream.result(sentinel["task_id"])["status"] == "COMPLETED"
    assert len(upstream.seen[task["task_id"]]) == 1


def test_a_tenant_over_its_daily_budget_is_rejected(upstream: Upstream) -> None:
    first = upstream.submit(QUICK, "spender")
    assert upstream.result(first["task_id"])["status"] == "COMPLETED"  # nothing spent yet (the scripted model is free)
    # What the supervisor writes when a priced model ran: a result whose usage cost 0.06 USD.
    priced = task_result(new_task("priced", f"s-{uuid.uuid4().hex[:10]}", "spender"), "COMPLETED", output="done",
                         agents=["billing"], usage={"input_tokens": 1000, "output_tokens": 500, "cost_usd": 0.06, "llm_calls": 1})
    upstream.send("results", "TaskResult", priced)
    wait_for(lambda: (upstream.gauge("tenant_spend_today_usd", "spender") or 0) >= 0.06, 60,
             "the router's ledger to count the priced result")
    task = upstream.submit(QUICK, "spender")
    assert_refused(upstream, task, TENANT_BUDGET_SPENT, "tenant 'spender' has spent $0.0600 today (UTC), its daily budget is $0.05")


def test_a_tenant_at_its_cap_of_tasks_in_flight_is_rejected_until_one_ends(upstream: Upstream) -> None:
    held = upstream.submit(HELD, "capped")
    requests: list[dict[str, Any]] = []

    def requested() -> bool:
        requests[:] = upstream.records("approvals", "ApprovalRequested", held["task_id"])
        return bool(requests)

    wait_for(requested, 120, "the held task's approval request")
    wait_for(lambda: upstream.gauge("tenant_tasks_in_flight", "capped") == 1, 60, "the ledger to count the held task")
    over = upstream.submit(QUICK, "capped")
    assert_refused(upstream, over, TENANT_BUSY, "tenant 'capped' has 1 tasks in flight, its cap is 1")
    assert upstream.submit(QUICK, "open") and upstream.gauge("tenant_tasks_in_flight", "capped") == 1
    decision = approval_decision(requests[0], "deny", "ops", "not today", now_ms())
    upstream.send("approval_decisions", "ApprovalDecision", decision)
    assert upstream.result(held["task_id"])["status"] == "COMPLETED"
    wait_for(lambda: upstream.gauge("tenant_tasks_in_flight", "capped") == 0, 60, "the ledger to close the held task")
    after = upstream.submit(QUICK, "capped")
    assert upstream.result(after["task_id"])["status"] == "COMPLETED"


def test_a_restarted_router_keeps_its_ledger_figures(upstream: Upstream) -> None:
    spent = upstream.submit(QUICK, "spender")
    upstream.result(spent["task_id"])  # after the budget test: refused, or completed when run alone
    before = upstream.gauge("tenant_spend_today_usd", "spender")
    router = upstream.stack.workers["router"]
    router.stop()
    assert router.wait() == 0
    upstream.start_router()
    wait_for(lambda: upstream.gauge("tenant_spend_today_usd", "spender") is not None, 60, "the restarted router's gauges")
    assert upstream.gauge("tenant_spend_today_usd", "spender") == before
    assert upstream.gauge("tenant_tasks_in_flight", "spender") == 0
    router_log = "\n".join(upstream.stack.workers["router"].matching("tenant ledger"))
    assert "reading" in router_log and "failed" not in router_log and "not at the topics' end" not in router_log
    after = upstream.submit(QUICK, "open")
    assert upstream.result(after["task_id"])["status"] == "COMPLETED"


def test_a_router_whose_tenants_file_is_missing_does_not_start(upstream: Upstream) -> None:
    """As a pod whose tenants Secret is gone would have it: the router names the file and the
    fix and exits, rather than routing with no tenant limits."""
    missing = upstream.tenants_file.parent / "gone" / "tenants.yaml"
    env = cli_env(**upstream.stack.env("router-without-file"), **{TENANTS_ENV: str(missing)})
    done = run("worker", "router", env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"names the tenants file {missing}, and there is no file there" in done.stderr
    assert f"unset {TENANTS_ENV} to run without tenant limits" in done.stderr
    assert ": assigned " not in done.stderr  # it never joined the router's group
