"""The supervisor's escalate verdict as a wait for a human (``supervision.escalate:
approval``), on a real broker with real worker processes; the models are one
OpenAI-compatible HTTP server (LoopbackServer) reached through the official SDK, whose
reviews escalate every task here (test_supervisor_review.ModelSide).

An escalated task waits WAITING_INPUT with a ``publish_answer`` request from the
supervisor on the approvals topic, listed by ``agentstream approvals list``, and no
result; ``approve`` publishes the draft as its one COMPLETED result, ``approve --args``
an edited answer, ``deny`` a FAILED NEEDS_HUMAN_REVIEW result with the reason,
``agentstream cancel`` a CANCELED one. A second decision is recorded and ignored; one the
supervisor refuses (an edit not shaped ``{"answer": ...}``) leaves the approval open in the
gateway's view, so the next decision over HTTP is taken. The billing specialist, which consumes the same
decisions topic for its own approvals, says nothing about the supervisor's, and the
supervisor nothing about billing's; each refuses an unknown id addressed to it. And a
supervisor SIGKILLed while tasks wait keeps the waits: the new one publishes an approval
and applies the deadline of the other. ``on_deadline: escalate`` asks the ``escalate_to``
group once more, then denies.

A cancel that comes while the supervisor's review is still running (the model's answer
held back) ends the task CANCELED once the review ends: no escalation is held, no request
sent; and one the supervisor has committed before a SIGKILL (its review still running) is
applied by its successor, which does not review the task again.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from agentstream.approvals.records import approval_decision
from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.runtime.lag import consumer_lag
from agentstream.supervisor.review import NEEDS_HUMAN_REVIEW
from tests.unit.test_providers_openai import LoopbackServer

from .cli import cli_env, run
from .gateway_harness import GatewayProcess, TenantsFile
from .harness import read_all, wait_for
from .model_server import openai_env
from .test_durable import SCHEMAS, DurableStack
from .test_llm_router import WORKERS, kill_and_restart
from .test_supervisor_review import DRAFT, RISKY, WHY, ModelSide, _topology

EDITED = "We refund INV-77 once; a manager will call you about the second."
DEADLINE_S = 40  # past the restart of the killed supervisor, so its successor applies it


class Desk:
    """A stack whose reviews escalate, and readers of its topics and the CLI."""

    def __init__(self, bootstrap: str, tmp_path: Path, server: LoopbackServer, **approval: Any) -> None:
        topology = _topology(tmp_path, escalate="approval", approval={"deadline_s": 3600, **approval})
        self.stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=topology, env=openai_env(server))
        self.env = cli_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, AGENTSTREAM_PREFIX=self.stack.prefix,
                           AGENTSTREAM_TOPOLOGY=str(topology))

    def records(self, logical: str, schema: str) -> list[dict[str, Any]]:
        topic = self.stack.topology.topic(logical)
        return [SCHEMAS.decode_as(schema, value) for _, value, _ in read_all(self.stack.bootstrap, topic) if value]

    def requests_of(self, tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The approval request of each task, once every one has one."""
        wanted = {task["task_id"] for task in tasks}
        found: dict[str, dict[str, Any]] = {}

        def requested() -> bool:
            found.update((r["task_id"], r) for r in self.records("approvals", "ApprovalRequested") if r["task_id"] in wanted)
            return set(found) == wanted

        wait_for(requested, 120, f"approval requests of {sorted(wanted)}")
        return found

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return [e for e in self.records("task_events", "TaskEvent") if e["task_id"] == task_id]

    def wait_event(self, task_id: str, stage: str, state: str, text: str) -> None:
        def seen() -> bool:
            return any((e["stage"], e["state"]) == (stage, state) and text in e["detail"] for e in self.events(task_id))

        wait_for(seen, 60, f"a {stage} {state} event of {task_id} saying {text!r}")

    def results(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for result in self.records("results", "TaskResult"):
            found.setdefault(result["task_id"], []).append(result)
        return found

    def cli(self, *args: str) -> str:
        done = run("approvals", *args, env=self.env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout


def _tasks(count: int, name: str) -> list[dict[str, Any]]:
    """``count`` tasks the review escalates, each its own session."""
    return [new_task(RISKY, f"{name}-{uuid.uuid4().hex[:8]}", "acme") for _ in range(count)]


def test_approve_edit_and_deny_decide_an_escalated_task_once(bootstrap: str, tmp_path: Path) -> None:
    approved, edited, denied, canceled = tasks = _tasks(4, "e")
    with LoopbackServer(ModelSide().answer).running() as server:
        desk = Desk(bootstrap, tmp_path, server)
        try:
            desk.stack.start_all(WORKERS)
            desk.stack.submit(tasks)
            requests = desk.requests_of(tasks)
            request = requests[approved["task_id"]]
            assert (request["agent_type"], request["tool"]) == ("supervisor", "publish_answer")
            assert request["approval_id"] == f"supervisor:{approved['task_id']}:escalate"
            assert json.loads(request["arguments_json"]) == {"answer": DRAFT} and request["input"] == RISKY
            assert WHY in request["tool_description"] and request["answer_so_far"] == DRAFT
            for task in tasks:
                desk.wait_event(task["task_id"], "supervisor", "WAITING_INPUT", WHY)
            listed = desk.cli("list")
            assert all(r["approval_id"] in listed for r in requests.values()), listed
            assert not set(desk.results()) & {task["task_id"] for task in tasks}  # nothing published while they wait

            desk.cli("approve", request["approval_id"], "--who", "ops", "--reason", "checked")
            desk.cli("approve", requests[edited["task_id"]]["approval_id"], "--args", json.dumps({"answer": EDITED}))
            desk.cli("deny", requests[denied["task_id"]]["approval_id"], "--who", "ops", "--reason", "no double refunds")
            done = run("cancel", canceled["task_id"], "--by", "carol", "--reason", "withdrawn", env=desk.env)
            assert done.returncode == 0, done.stderr[-3000:]
            results = desk.stack.results({task["task_id"] for task in tasks}, timeout=90)
            assert [(r["status"], r["output"], r["error"]) for r in results[approved["task_id"]]] == [
                ("COMPLETED", DRAFT, None)]
            assert [(r["status"], r["output"]) for r in results[edited["task_id"]]] == [("COMPLETED", EDITED)]
            assert [(r["status"], r["output"], r["error"]) for r in results[denied["task_id"]]] == [
                ("FAILED", None, {"code": NEEDS_HUMAN_REVIEW, "message": "denied by ops: no double refunds"})]
            assert [(r["status"], r["output"], r["error"]) for r in results[canceled["task_id"]]] == [
                ("CANCELED", None, {"code": "CANCELED", "message": "canceled by carol: withdrawn"})]
            assert results[approved["task_id"]][0]["review"]["verdict"] == "escalate"

            # A second decision is recorded and ignored: no second result.
            desk.cli("deny", request["approval_id"], "--who", "late", "--reason", "changed my mind")
            desk.wait_event(approved["task_id"], "supervisor", "REJECTED", "was already decided (approve by ops)")
            desk.cli("approve", requests[canceled["task_id"]]["approval_id"], "--who", "late")
            desk.wait_event(canceled["task_id"], "supervisor", "REJECTED", "was already decided (canceled by carol)")
            # A decision for billing's own approvals on the same session: once billing has
            # answered it, billing has read the supervisor's decisions before it, in order.
            probe = f"probe-{uuid.uuid4().hex[:8]}"
            _produce(desk, {**request, "agent_type": "billing", "approval_id": f"billing:{probe}:0:0", "task_id": probe})
            desk.wait_event(probe, "billing", "REJECTED", "is known to the billing specialist")
            assert not [e for e in desk.events(probe) if e["stage"] == "supervisor"]  # not the supervisor's
            # And vice versa: an unknown id addressed to the supervisor is the supervisor's to refuse.
            ghost = f"ghost-{uuid.uuid4().hex[:8]}"
            _produce(desk, {**request, "approval_id": f"supervisor:{ghost}:escalate", "task_id": ghost})
            desk.wait_event(ghost, "supervisor", "REJECTED", "is known to the supervisor")
            assert not [e for e in desk.events(ghost) if e["stage"] != "supervisor"]
            for task in tasks:  # the specialists never answered the supervisor's decisions
                assert not [e for e in desk.events(task["task_id"]) if e["state"] == "REJECTED" and e["stage"] != "supervisor"]
            assert [len(desk.results()[task["task_id"]]) for task in tasks] == [1, 1, 1, 1]
            assert all(r["approval_id"] not in desk.cli("list") for r in requests.values())
        finally:
            codes = desk.stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def test_an_edit_the_supervisor_refused_leaves_the_approval_open_in_the_gateway(bootstrap: str, tmp_path: Path) -> None:
    [task] = _tasks(1, "r")
    task_id = task["task_id"]
    tenants = TenantsFile.write(tmp_path / "tenants.yaml", {"acme": {}})
    ops = tenants.headers("acme", "operator")
    with LoopbackServer(ModelSide().answer).running() as server:
        desk = Desk(bootstrap, tmp_path, server)
        gateway: GatewayProcess | None = None
        try:
            desk.stack.start_all(WORKERS)
            gateway = GatewayProcess({**desk.env, "AGENTSTREAM_STATE_DIR": str(tmp_path / "gw")}, tenants.path)
            desk.stack.submit([task])
            ident = desk.requests_of([task])[task_id]["approval_id"]
            with gateway.client() as http:
                def listed() -> bool:
                    return ident in [a["approval_id"] for a in http.get("/v1/approvals", headers=ops).json()]

                wait_for(listed, 60, f"{ident} listed by the gateway")
                wrong = http.post(f"/v1/approvals/{ident}", json={"decision": "edit", "arguments": {"text": EDITED}},
                                  headers=ops)
                assert wrong.status_code == 200, wrong.text
                desk.wait_event(task_id, "supervisor", "REJECTED", "the task still waits")
                wait_for(lambda: http.get(f"/v1/tasks/{task_id}", headers=tenants.headers("acme")).json()["state"]
                         == "REJECTED", 30, f"the refusal in {task_id}'s view")
                assert listed()
                approved = http.post(f"/v1/approvals/{ident}", json={"decision": "approve"}, headers=ops)
                assert approved.status_code == 200, approved.text
                results = desk.stack.results({task_id}, timeout=90)
                assert [(r["status"], r["output"]) for r in results[task_id]] == [("COMPLETED", DRAFT)]
                wait_for(lambda: not listed(), 30, f"{ident} decided in the gateway's view")
                again = http.post(f"/v1/approvals/{ident}", json={"decision": "deny", "reason": "late"}, headers=ops)
                assert (again.status_code, again.json()["code"]) == (409, "already_decided"), again.text
        finally:
            code = gateway.stop() if gateway is not None else 0
            codes = desk.stack.stop_all()
    assert code == 0 and all(c == 0 for c in codes.values()), (code, codes)


def test_a_supervisor_killed_while_tasks_wait_keeps_the_waits_and_their_deadline(bootstrap: str, tmp_path: Path) -> None:
    approved, expired = tasks = _tasks(2, "k")
    with LoopbackServer(ModelSide().answer).running() as server:
        desk = Desk(bootstrap, tmp_path, server, deadline_s=DEADLINE_S)
        try:
            desk.stack.start_all(WORKERS)
            desk.stack.submit(tasks)
            requests = desk.requests_of(tasks)
            for task in tasks:
                desk.wait_event(task["task_id"], "supervisor", "WAITING_INPUT", WHY)
            desk.stack.workers["supervisor"].kill()
            desk.stack.workers["supervisor"].wait(30)
            desk.stack.start("supervisor-2", *WORKERS["supervisor"]).wait_for_line(r": assigned ", 60)

            desk.cli("approve", requests[approved["task_id"]]["approval_id"], "--who", "ops")
            got = desk.stack.results({approved["task_id"]}, timeout=60)[approved["task_id"]]
            assert [(r["status"], r["output"]) for r in got] == [("COMPLETED", DRAFT)]
            late = desk.stack.results({expired["task_id"]}, timeout=DEADLINE_S + 60)[expired["task_id"]]
            assert len(late) == 1 and (late[0]["status"], late[0]["error"]["code"]) == ("FAILED", NEEDS_HUMAN_REVIEW)
            assert late[0]["error"]["message"].startswith("denied by deadline: no decision before the deadline")
        finally:
            codes = desk.stack.stop_all()
    assert all(code in (0, -9) for code in codes.values()), codes


def test_at_the_deadline_the_request_goes_to_the_escalation_group_then_the_task_is_denied(
    bootstrap: str, tmp_path: Path
) -> None:
    (task,) = _tasks(1, "d")
    with LoopbackServer(ModelSide().answer).running() as server:
        desk = Desk(bootstrap, tmp_path, server, deadline_s=3, on_deadline="escalate", escalate_to="leads")
        try:
            desk.stack.start_all(WORKERS)
            desk.stack.submit([task])
            got = desk.stack.results({task["task_id"]}, timeout=120)[task["task_id"]]
            assert len(got) == 1 and (got[0]["status"], got[0]["error"]["code"]) == ("FAILED", NEEDS_HUMAN_REVIEW)
            assert got[0]["error"]["message"].startswith("denied by deadline: no decision before the deadline")
            asked = [r["approvers"] for r in desk.records("approvals", "ApprovalRequested") if r["task_id"] == task["task_id"]]
            assert asked == ["", "leads"], asked
            desk.wait_event(task["task_id"], "supervisor", "WAITING_INPUT", "passed its deadline; escalated to leads")
        finally:
            codes = desk.stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def test_a_cancel_during_the_review_ends_the_task_canceled_and_survives_a_kill(bootstrap: str, tmp_path: Path) -> None:
    during, killed = tasks = _tasks(2, "c")
    side = ModelSide()
    with LoopbackServer(side.answer).running() as server:
        desk = Desk(bootstrap, tmp_path, server)
        try:
            desk.stack.start_all(WORKERS)
            for reviews, (task, by) in enumerate(((during, "carol"), (killed, "dave")), start=1):
                side.release.clear()
                side.hold_review.set()  # the review of this task stalls until released
                desk.stack.submit([task])
                wait_for(lambda n=reviews: len(side.reviews) == n, 90, f"the review call of {task['task_id']}")
                done = run("cancel", task["task_id"], "--by", by, "--reason", "withdrawn", env=desk.env)
                assert done.returncode == 0, done.stderr[-3000:]
                # The supervisor has handled the cancel (committed it: it is not read again)
                # while the review is still held back.
                wait_for(lambda: _cancels_committed(desk), 60, "the supervisor group's commit of the cancel")
                if task is killed:  # committed, its review still in flight: the successor must apply it
                    kill_and_restart(desk.stack, "supervisor", side.release, r": assigned ")
                else:
                    side.release.set()
            results = desk.stack.results({task["task_id"] for task in tasks}, timeout=90)
            for task, by in ((during, "carol"), (killed, "dave")):
                assert [(r["status"], r["output"], r["error"]) for r in results[task["task_id"]]] == [
                    ("CANCELED", None, {"code": "CANCELED", "message": f"canceled by {by}: withdrawn"})]
                desk.wait_event(task["task_id"], "supervisor", "CANCELED", "")
            # Never held: no approval request on the topic, none listed, nothing waiting.
            asked = {r["task_id"] for r in desk.records("approvals", "ApprovalRequested")}
            assert not asked & {task["task_id"] for task in tasks}, asked
            listed = desk.cli("list")
            assert all(task["task_id"] not in listed for task in tasks), listed
            assert not [e for task in tasks for e in desk.events(task["task_id"]) if e["state"] == "WAITING_INPUT"]
            # The successor did not review the killed one's task again: the cancel came first.
            assert len(side.reviews) == 2, len(side.reviews)
        finally:
            side.release.set()
            codes = desk.stack.stop_all()
    assert all(code in (0, -9) for code in codes.values()), codes


def _cancels_committed(desk: Desk) -> bool:
    """Whether the supervisor group has committed every record of the control topic."""
    rows = consumer_lag(desk.stack.bootstrap, desk.stack.topology.group("supervisor"), [desk.stack.topology.topic("control")])
    return all(row.committed == row.end for row in rows if row.end > 0)


def _produce(desk: Desk, request: dict[str, Any]) -> None:
    """Approve ``request`` (an ApprovalRequested record) as a UI would."""
    record = approval_decision(request, "approve", "ops", "", 1)
    producer = Producer(producer_config(desk.stack.bootstrap))
    producer.produce(desk.stack.topology.topic("approval_decisions"), SCHEMAS.encode("ApprovalDecision", record),
                     record["session_id"])
    assert producer.flush(30) == 0
