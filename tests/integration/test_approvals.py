"""Human approval on a real broker with real worker processes: a tool call held for
approval leaves its task WAITING_INPUT with an ApprovalRequested record and nothing
running; approve runs the tool once and resumes without calling the model again for that
step; deny shows the model the denial; a second decision and an unknown id are answered
with clear events; a SIGKILL of the specialist while a task waits loses nothing."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer

from agentstream.approvals.records import approval_decision
from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.serde import SchemaSet
from tests import support_desk

from .apps.refund_ledger import LEDGER_ENV
from .cli import cli_env, run
from .harness import free_port, read_all, wait_for
from .test_durable import DurableStack

SCHEMAS = SchemaSet.load()
LEDGER_TOOLS = Path(__file__).with_name("apps") / "refund_ledger.py"
VOID_DEADLINE_S = 15  # past the restart of the killed specialist, so its successor applies it
WORKERS = {"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]}
WAITING_GAUGE = re.compile(r'^agentstream_approvals_waiting\{agent="billing"\} (\S+)$', re.MULTILINE)


def waiting_gauge(port: int) -> float | None:
    """The billing worker's agentstream_approvals_waiting, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        found = WAITING_GAUGE.search(response.read().decode())
    return float(found.group(1)) if found else None


def _topology(tmp_path: Path) -> Path:
    """The support desk with a ledger-writing refund tool on billing, always held."""
    topology = yaml.safe_load((support_desk.APP / "topology.yaml").read_text())
    billing = topology["agents"]["billing"]
    billing["tools_modules"] = [str(LEDGER_TOOLS)]
    billing["tools"] = [*billing["tools"], "refund_payment", "void_payment", "hold_payment", "gated_refund"]
    billing["approvals"] = {"refund_payment": {"require": "always", "deadline_s": 3600},
                            "gated_refund": {"require": "always", "deadline_s": 3600},
                            "void_payment": {"require": "always", "deadline_s": VOID_DEADLINE_S, "on_deadline": "deny"},
                            "hold_payment": {"require": "always", "deadline_s": 2, "on_deadline": "escalate",
                                             "escalate_to": "leads"}}
    billing["model"]["scripted"][:0] = [
        {"find": r"\brefund payment (INV-\d+)", "call": "refund_payment", "argument": "invoice_id", "case": "upper"},
        {"find": r"\bvoid payment (INV-\d+)", "call": "void_payment", "argument": "invoice_id", "case": "upper"},
        {"find": r"\bhold payment (INV-\d+)", "call": "hold_payment", "argument": "invoice_id", "case": "upper"},
        {"find": r"\bgated refund (INV-\d+)", "call": "gated_refund", "argument": "invoice_id", "case": "upper"},
    ]
    path = support_desk.copy_app(tmp_path / "app")
    path.write_text(yaml.safe_dump(topology))
    return path


class Approvals:
    """The stack plus readers of its approval and event topics and the CLI."""

    def __init__(self, bootstrap: str, tmp_path: Path, latency: str = "0", env: dict[str, str] | None = None) -> None:
        self.ledger = tmp_path / "ledger.txt"
        self.ledger.touch()
        self.stack = DurableStack(bootstrap, tmp_path, latency=latency, topology_path=_topology(tmp_path),
                                  env={LEDGER_ENV: str(self.ledger), **(env or {})})
        self.bootstrap = bootstrap
        self.env = cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=self.stack.prefix,
                           AGENTSTREAM_TOPOLOGY=str(self.stack.topology_path))

    def records(self, logical: str, schema: str) -> list[dict[str, Any]]:
        topic = self.stack.topology.topic(logical)
        return [SCHEMAS.decode_as(schema, value) for _, value, _ in read_all(self.bootstrap, topic) if value]

    def request_of(self, task_id: str) -> dict[str, Any]:
        return self.requests_of([task_id], 60)[task_id]

    def requests_of(self, task_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        """The latest approval request of each of ``task_ids``, once every one has one."""
        found: dict[str, dict[str, Any]] = {}

        def requested() -> bool:
            found.clear()
            found.update((r["task_id"], r) for r in self.records("approvals", "ApprovalRequested") if r["task_id"] in task_ids)
            return len(found) == len(task_ids)

        wait_for(requested, timeout, f"approval requests of all {len(task_ids)} tasks")
        return dict(found)

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return [e for e in self.records("task_events", "TaskEvent") if e["task_id"] == task_id]

    def wait_event(self, task_id: str, kind: str, state: str, text: str) -> dict[str, Any]:
        def match() -> list[dict[str, Any]]:
            return [e for e in self.events(task_id) if (e["kind"], e["state"]) == (kind, state) and text in e["detail"]]

        wait_for(lambda: bool(match()), 60, f"a {kind}/{state} event of {task_id} saying {text!r}")
        return match()[0]

    def cli(self, *args: str) -> str:
        done = run("approvals", *args, env=self.env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def cli_cancel(self, *args: str) -> str:
        done = run("cancel", *args, env=self.env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def ledger_lines(self) -> list[str]:
        return self.ledger.read_text().splitlines()

    def steps(self, task_id: str) -> list[int]:
        return [step for task, step, _ in self.stack.calls() if task == task_id]


def billing_task(text: str, session: str, run_id: str, name: str) -> dict[str, Any]:
    return new_task(text, session, "it", task_id=f"{name}-{run_id}", requested_agent="billing")


def test_approve_deny_duplicate_unknown_and_a_kill_while_waiting(bootstrap: str, tmp_path: Path) -> None:
    desk = Approvals(bootstrap, tmp_path)
    run_id = uuid.uuid4().hex[:6]
    approved = billing_task("Please refund payment INV-1001", f"s-a-{run_id}", run_id, "approved")
    behind = billing_task("Please check invoice INV-1002", f"s-a-{run_id}", run_id, "behind")  # same session
    denied = billing_task("Please refund payment INV-1003", f"s-d-{run_id}", run_id, "denied")
    edited = billing_task("Please refund payment INV-1002", f"s-x-{run_id}", run_id, "edited")
    escalated = billing_task("Please hold payment INV-1002", f"s-h-{run_id}", run_id, "escalated")
    killed = billing_task("Please refund payment INV-1004", f"s-k-{run_id}", run_id, "killed")
    expired = billing_task("Please void payment INV-1001", f"s-e-{run_id}", run_id, "expired")
    try:
        port = free_port()
        desk.stack.start_all({**WORKERS, "billing": [*WORKERS["billing"], "--metrics-port", str(port)]})
        desk.stack.submit([approved, behind, denied, edited, escalated])
        # Once escalated's two 2-s deadlines have ended its wait, three tasks hold a call
        # (behind waits in the router, behind approved): the billing worker's gauge says so.
        desk.stack.results({escalated["task_id"]}, timeout=60)
        wait_for(lambda: waiting_gauge(port) == 3, 30, "agentstream_approvals_waiting 3 on the billing worker")

        # Waiting: a request with the call and its context, the task WAITING_INPUT, the tool not run.
        request = desk.request_of(approved["task_id"])
        assert (request["tool"], request["arguments_json"]) == ("refund_payment", '{"invoice_id":"INV-1001"}')
        assert request["input"] == approved["input"] and request["agent_type"] == "billing"
        assert "Refund the payment of an invoice" in request["tool_description"]
        desk.wait_event(approved["task_id"], "STATE", "WAITING_INPUT", request["approval_id"])
        denied_request = desk.request_of(denied["task_id"])
        assert desk.ledger_lines() == []
        assert request["approval_id"] in desk.cli("list")

        # Approve: the tool runs once, the model is not asked again for the held step.
        assert "approve of" in desk.cli("approve", request["approval_id"], "--who", "ops", "--reason", "ok")
        results = desk.stack.results({approved["task_id"], behind["task_id"]}, timeout=90)
        assert results[approved["task_id"]][0]["status"] == "COMPLETED"
        assert desk.ledger_lines() == [f"{approved['task_id']}:0:0 refund INV-1001"]
        assert desk.steps(approved["task_id"]) == [0, 1]
        wait_for(lambda: waiting_gauge(port) == 2, 30, "agentstream_approvals_waiting 2 once one is approved")
        # The session's next task waited behind the held one: its model calls came after.
        calls = [task for task, _, _ in desk.stack.calls()]
        assert calls.index(behind["task_id"]) > len(calls) - 1 - calls[::-1].index(approved["task_id"])

        # Deny: the model reads the denial as the tool's result and answers.
        desk.cli("deny", denied_request["approval_id"], "--who", "ops", "--reason", "over the refund limit")
        answer = desk.stack.results({denied["task_id"]}, timeout=90)[denied["task_id"]][0]
        assert answer["status"] == "COMPLETED" and "over the refund limit" in answer["output"], answer["output"]
        assert desk.steps(denied["task_id"]) == [0, 1]
        assert len(desk.ledger_lines()) == 1

        # Approve with edited arguments: the tool runs with those.
        edited_request = desk.request_of(edited["task_id"])
        desk.cli("approve", edited_request["approval_id"], "--args", '{"invoice_id": "INV-1003"}', "--reason", "typo")
        assert desk.stack.results({edited["task_id"]}, timeout=90)[edited["task_id"]][0]["status"] == "COMPLETED"
        assert desk.ledger_lines()[1:] == [f"{edited['task_id']}:0:0 refund INV-1003"]

        # A second decision is recorded and ignored; an unknown id gets a clear event.
        desk.cli("deny", request["approval_id"], "--who", "late", "--reason", "changed my mind")
        desk.wait_event(approved["task_id"], "ERROR", "REJECTED", "was already decided (approve by ops)")
        shown = json.loads(desk.cli("show", request["approval_id"]))
        assert [(d["decision"], d["who"]) for d in shown["decisions"]] == [("approve", "ops"), ("deny", "late")]
        assert request["approval_id"] not in desk.cli("list")
        unknown = {**denied_request, "approval_id": f"billing:no-such-task-{run_id}:0:0", "task_id": f"ghost-{run_id}"}
        produce_decisions(desk, [unknown])
        desk.wait_event(f"ghost-{run_id}", "ERROR", "REJECTED", "is known to the billing specialist")
        assert len(desk.ledger_lines()) == 2

        # SIGKILL while waiting: the new worker keeps the wait, then the approval resumes it;
        # the deadline of a call nobody answers fires on the new worker.
        desk.stack.submit([killed, expired])
        killed_request = desk.request_of(killed["task_id"])
        expired_request = desk.request_of(expired["task_id"])
        desk.stack.workers["billing"].kill()
        desk.stack.workers["billing"].wait(30)
        desk.stack.start("billing-2", *WORKERS["billing"]).wait_for_line(r": assigned ", 60)
        new_worker = desk.stack.workers["billing-2"]
        desk.cli("approve", killed_request["approval_id"], "--who", "ops")
        result = desk.stack.results({killed["task_id"]}, timeout=90)[killed["task_id"]]
        assert len(result) == 1 and result[0]["status"] == "COMPLETED"
        assert [line for line in desk.ledger_lines() if "INV-1004" in line] == [f"{killed['task_id']}:0:0 refund INV-1004"]
        assert desk.steps(killed["task_id"]) == [0, 1]
        late = desk.stack.results({expired["task_id"]}, timeout=VOID_DEADLINE_S + 60)[expired["task_id"]]
        assert late[0]["status"] == "COMPLETED" and "no decision before the deadline" in late[0]["output"]
        assert new_worker.matching(rf"approval {expired_request['approval_id']}: deny by deadline")
        assert expired_request["approval_id"] not in desk.cli("list")  # closed by its deadline: no record says so
        assert not [line for line in desk.ledger_lines() if "void" in line]
        desk.cli("approve", expired_request["approval_id"], "--who", "too-late")  # an expired approval
        desk.wait_event(expired["task_id"], "ERROR", "REJECTED", "was already decided (deny by deadline)")
        # Escalation: at the first deadline the request goes to the escalate_to group, at the second it is denied.
        desk.wait_event(escalated["task_id"], "TEXT", "WAITING_INPUT", "passed its deadline; escalated to leads")
        asked = [r["approvers"] for r in desk.records("approvals", "ApprovalRequested") if r["task_id"] == escalated["task_id"]]
        assert asked == ["", "leads"], asked
        held = desk.stack.results({escalated["task_id"]}, timeout=60)[escalated["task_id"]][0]
        assert "no decision before the deadline" in held["output"]
        assert not [line for line in desk.ledger_lines() if "hold" in line]
        assert len(desk.stack.results({approved["task_id"]}, timeout=30)[approved["task_id"]]) == 1
    finally:
        codes = desk.stack.stop_all()
    assert all(code in (0, -9) for code in codes.values()), codes


def produce_decisions(desk: Approvals, requests: list[dict[str, Any]]) -> None:
    """Approve each of ``requests`` (ApprovalRequested records) by ops, as a UI would."""
    producer = Producer(producer_config(desk.bootstrap))
    for request in requests:
        record = approval_decision(request, "approve", "ops", "", 1)
        producer.produce(desk.stack.topology.topic("approval_decisions"), SCHEMAS.encode("ApprovalDecision", record),
                         record["session_id"])
    assert producer.flush(30) == 0
