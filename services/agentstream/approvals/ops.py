"""``agentstream approvals list | show ID | approve ID [--args JSON] | deny ID --reason``.

Reads the ``approvals`` topic (ApprovalRequested) and the ``approval_decisions`` topic
(ApprovalDecision) whole, group-less, and answers a request by producing one
ApprovalDecision keyed by its session, as a UI or a chat bot would. ``list`` shows the
requests no decision answers yet, whose task no cancel names (``control`` topic) and whose
deadline has not passed (the gateway's rule too: gateway/view_rules.py); the
specialist is the judge of a decision (it refuses one for another call's hash, and
ignores all but the first), so a request answered by a refused decision is listed as
answered here: ``show`` gives every decision it got.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from confluent_kafka import Producer

from agentstream.approvals.records import APPROVE, DENY, EDIT, approval_decision
from agentstream.blocking_send import ACK_TIMEOUT_S, Delivery, acknowledged, producer_settings
from agentstream.clients import producer_config
from agentstream.errors import AgentStreamError
from agentstream.events import APPROVAL_DECISION, APPROVAL_REQUESTED, TASK_CANCEL, now_ms
from agentstream.runtime.lag import read_topic
from agentstream.serde import SchemaSet, SerdeError
from agentstream.telemetry import tracing
from agentstream.topology import Topology


class ApprovalNotFound(AgentStreamError):
    """No ApprovalRequested with the given id is on the approvals topic."""


def read_records(bootstrap: str, topic: str, schema: str, schemas: SchemaSet) -> list[dict[str, Any]]:
    """Every ``schema`` record of ``topic``, in partition order; others are skipped."""
    records = []
    for record in read_topic(bootstrap, topic):
        if record.value is None:
            continue
        try:
            records.append(schemas.decode_as(schema, record.value))
        except SerdeError:
            continue  # not ours to judge here; the topic's producers own its contents
    return records


class ApprovalTopics:
    """The approvals topics of one topology, read and answered from outside the workers."""

    def __init__(self, bootstrap: str, topology: Topology, schemas: SchemaSet) -> None:
        self.bootstrap = bootstrap
        self.topology = topology
        self.schemas = schemas

    def requests(self) -> dict[str, dict[str, Any]]:
        topic = self.topology.topic("approvals")
        # An escalated request is sent again under its id: the latest copy wins.
        return {r["approval_id"]: r for r in read_records(self.bootstrap, topic, APPROVAL_REQUESTED, self.schemas)}

    def decisions(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        topic = self.topology.topic("approval_decisions")
        for decision in read_records(self.bootstrap, topic, APPROVAL_DECISION, self.schemas):
            found.setdefault(decision["approval_id"], []).append(decision)
        return found

    def canceled_tasks(self) -> set[str]:
        """The tasks a TaskCancel names: their waits were dropped (specialist/canceling.py)."""
        return {c["task_id"] for c in read_records(self.bootstrap, self.topology.topic("control"), TASK_CANCEL, self.schemas)}

    def request(self, ident: str) -> dict[str, Any]:
        found = self.requests().get(ident)
        if found is None:
            raise ApprovalNotFound(
                f"No approval request {ident!r} on {self.topology.topic('approvals')}; "
                "`agentstream approvals list` shows the pending ones.")
        return found

    def decide(self, ident: str, decision: str, who: str, why: str, edited: object = None, *,
               request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Produce the decision on ``ident`` (acknowledged before this returns). ``request``:
        its ApprovalRequested when the caller has it already (the gateway's view), so the
        topic is not read again."""
        record = approval_decision(request or self.request(ident), decision, who, why, now_ms(), edited)
        producer = Producer(producer_config(self.bootstrap, producer_settings()))
        topic = self.topology.topic("approval_decisions")
        delivery = Delivery()
        with tracing.producing(topic, None, None) as traced:
            producer.produce(topic, self.schemas.encode(APPROVAL_DECISION, record), record["session_id"],
                             headers=traced.headers, on_delivery=delivery.report)
        # CheckpointError if the broker did not take it (broker_refusal.py: the gateway's and the Client's answer).
        acknowledged(producer, [delivery], ACK_TIMEOUT_S, f"The decision on {ident!r}")
        return record


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad ``--args`` before anything is read."""
    if args.action == "approve" and args.args is not None:
        edited = _edited(args.args)
        if not isinstance(edited, dict):
            raise SystemExit(f"--args must be a JSON object of the tool's arguments, got {args.args!r}.")


def _edited(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"--args is not JSON ({exc}): {text!r}") from None


def run_command(args: argparse.Namespace, bootstrap: str, topology: Topology, schemas: SchemaSet | None = None,
                *, stdout: TextIO | None = None) -> int:
    """Run ``agentstream approvals <action>``; the exit code."""
    out = stdout or sys.stdout
    desk = ApprovalTopics(bootstrap, topology, schemas or SchemaSet.load())
    try:
        if args.action == "list":
            _list(desk, out)
        elif args.action == "show":
            out.write(json.dumps({"request": desk.request(args.id), "decisions": desk.decisions().get(args.id, [])},
                                 indent=2, ensure_ascii=False) + "\n")
        else:
            who = args.who or getpass.getuser()
            if args.action == "deny":
                record = desk.decide(args.id, DENY, who, args.reason)
            elif args.args is not None:
                record = desk.decide(args.id, EDIT, who, args.reason or "", _edited(args.args))
            else:
                record = desk.decide(args.id, APPROVE, who, args.reason or "")
            out.write(f"{record['decision']} of {args.id} sent (task {record['task_id']}, by {who})\n")
    except ApprovalNotFound as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _list(desk: ApprovalTopics, out: TextIO) -> None:
    decided = desk.decisions()
    canceled = desk.canceled_tasks()
    now = now_ms()
    # Past its deadline a call is the specialist's to deny (or to re-send, with a new deadline,
    # to the escalation group): no human's decision is wanted, though no record says so.
    pending = [r for ident, r in desk.requests().items()
               if ident not in decided and r["task_id"] not in canceled and r["deadline"] > now]
    out.write(f"{'APPROVAL ID':44} {'TOOL':18} {'AGE':>8} {'DEADLINE':20} {'APPROVERS':12} ARGUMENTS\n")
    for request in sorted(pending, key=lambda r: r["requested_at"]):
        out.write(f"{request['approval_id']:44} {request['tool']:18} {_age(now - request['requested_at']):>8} "
                  f"{_when(request['deadline']):20} {request['approvers'] or '-':12} {request['arguments_json']}\n")
    out.write(f"{len(pending)} pending\n")


def _age(ms: int) -> str:
    seconds = max(ms, 0) // 1000
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

