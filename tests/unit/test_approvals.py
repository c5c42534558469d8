"""Human approval, the pure parts: the topology's policy, the records, the hash, how a
decision applies, and the gate the durable loop asks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentstream.approvals.gate import ApprovalGate, AwaitingApproval
from agentstream.approvals.policy import ApprovalPolicy
from agentstream.approvals.records import (
    PENDING, PendingCall, apply_decision, approval_decision, approval_id, approval_requested, arguments_hash,
    escalated, waiting_call,
)
from agentstream.errors import ConfigurationError
from agentstream.serde import SchemaSet
from agentstream.topology import DEFAULT_PATH, load_topology
from pydantic import ValidationError

TASK = {"task_id": "t-1", "session_id": "s-1", "tenant_id": "acme", "input": "Please refund INV-1001"}
CALL = PendingCall(2, 1, "refund_invoice", {"invoice_id": "INV-1001", "amount": 49.0}, "Refund an invoice.", 60.0, "deny")
NOW = 1_700_000_000_000


def _policy(**raw: Any) -> ApprovalPolicy:
    return ApprovalPolicy.model_validate(raw)


# -- policy ------------------------------------------------------------------------------
def test_always_and_never_ignore_the_arguments() -> None:
    assert _policy(require="always").needs_approval({})
    assert not _policy(require="never").needs_approval({"amount": 10**9})


@pytest.mark.parametrize(("arguments", "needed"), [
    ({"amount": 100, "currency": "EUR"}, False), ({"amount": 100.5, "currency": "EUR"}, True), ({"amount": 5, "currency": "USD"}, True),
    ({"currency": "EUR"}, True),  # amount missing: cannot judge, ask
    ({"amount": "lots", "currency": "EUR"}, True),  # a string against a number: ask
    ("not an object", True),
])
def test_a_rule_asks_when_any_comparison_holds_or_cannot_be_judged(arguments: object, needed: bool) -> None:
    policy = _policy(require="when", when=[{"argument": "amount", "op": ">", "value": 100},
                                           {"argument": "currency", "op": "!=", "value": "EUR"}])
    assert policy.needs_approval(arguments) is needed


@pytest.mark.parametrize(("raw", "message"), [
    ({"require": "when"}, "require: when needs a list"),
    ({"require": "always", "when": [{"argument": "a", "op": ">", "value": 1}]}, "apply only with require: when"),
    ({"require": "when", "when": [{"argument": "a", "op": "=~", "value": 1}]}, "'=='"),
    ({"require": "sometimes"}, "'always'"),
    ({"deadline_s": 0}, "greater than 0"),
    ({"on_deadline": "approve"}, "'deny'"),
    ({"on_deadline": "escalate"}, "escalate needs escalate_to"),
    ({"escalate_to": "leads"}, "escalate_to goes only with on_deadline: escalate"),
])
def test_a_bad_policy_is_refused_with_the_fix(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ApprovalPolicy.model_validate(raw)


def _write(tmp_path: Path, approvals: dict[str, Any], agent: str = "billing") -> Path:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["agents"][agent]["approvals"] = approvals
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_support_desk_holds_refunds_for_approval() -> None:
    policy = load_topology(None).agent("billing").approvals["refund_invoice"]
    assert policy.require == "always" and policy.on_deadline == "deny"


def test_the_topology_refuses_approvals_of_a_tool_the_agent_lacks(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"approvals name \['delete_account'\], which are not in the agent's tools"):
        load_topology(_write(tmp_path, {"delete_account": {"require": "always"}}))


def test_the_topology_refuses_approvals_outside_a_specialist(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="approvals apply to specialists only"):
        load_topology(_write(tmp_path, {"x": {"require": "always"}}, agent="router"))


def test_an_escalation_goes_to_its_group_once_with_a_new_deadline_then_denies() -> None:
    policy = _policy(require="always", deadline_s=60, on_deadline="escalate", escalate_to="leads")
    call = PendingCall(0, 0, "close_account", {}, "", policy.deadline_s, policy.on_deadline, policy.escalate_to)
    waiting = waiting_call(call, "billing:t-1:0:0", "t-1", TASK, NOW)
    raised = escalated(waiting, NOW + 70_000)
    assert raised is not None
    assert (raised["approvers"], raised["deadline"], raised["on_deadline"]) == ("leads", NOW + 130_000, "deny")
    assert approval_requested(raised, TASK, "billing")["approvers"] == "leads"
    assert escalated(raised, NOW + 140_000) is None and escalated(_waiting(), NOW) is None


# -- records -----------------------------------------------------------------------------
def test_the_hash_ignores_key_order_and_sees_every_value() -> None:
    assert arguments_hash({"a": 1, "b": [1, 2]}) == arguments_hash({"b": [1, 2], "a": 1})
    assert arguments_hash({"a": 1}) != arguments_hash({"a": 2})
    assert len(arguments_hash({})) == 64


def test_the_approval_id_is_the_same_on_every_replay_and_differs_per_call() -> None:
    assert approval_id("billing", "t-1", 2, 1) == approval_id("billing", "t-1", 2, 1) == "billing:t-1:2:1"
    assert len({approval_id("billing", "t-1", 2, 1), approval_id("billing", "t-1", 2, 0),
                approval_id("technical", "t-1", 2, 1), approval_id("billing", "t-1#rev1", 2, 1)}) == 4


def _waiting() -> dict[str, Any]:
    return waiting_call(CALL, approval_id("billing", "t-1", 2, 1), "t-1", TASK, NOW, "Let me refund that.")


def _request() -> dict[str, Any]:
    return approval_requested(_waiting(), TASK, "billing")


def test_request_and_decision_records_fit_their_schemas() -> None:
    schemas = SchemaSet.load()
    request = _request()
    assert request["deadline"] == NOW + 60_000
    assert (request["answer_so_far"], request["tool_description"], request["approvers"]) == (
        "Let me refund that.", CALL.description, "")
    assert json.loads(request["arguments_json"]) == CALL.arguments
    assert schemas.decode_as("ApprovalRequested", schemas.encode("ApprovalRequested", request)) == request
    decision = approval_decision(request, "edit", "ops", "wrong amount", NOW + 1, {"invoice_id": "INV-1001", "amount": 10})
    assert schemas.decode_as("ApprovalDecision", schemas.encode("ApprovalDecision", decision)) == decision
    with pytest.raises(ValueError, match="decision must be one of"):
        approval_decision(request, "maybe", "ops", "", NOW)


def test_an_approval_closes_the_call_with_the_requested_arguments() -> None:
    verdict, closed = apply_decision(_waiting(), approval_decision(_request(), "approve", "ops", "ok", NOW + 5), NOW + 6)
    assert verdict == "applied" and closed["status"] == "approve" and closed["closed_at"] == NOW + 6
    assert closed["decision"]["arguments"] == CALL.arguments and closed["decision"]["who"] == "ops"


def test_a_second_decision_is_recorded_and_changes_nothing() -> None:
    _, closed = apply_decision(_waiting(), approval_decision(_request(), "approve", "ops", "ok", NOW), NOW)
    verdict, again = apply_decision(closed, approval_decision(_request(), "deny", "boss", "no", NOW + 1), NOW + 1)
    assert verdict == "duplicate" and again["status"] == "approve" and again["decision"] == closed["decision"]
    assert [(i["decision"], i["who"]) for i in again["ignored"]] == [("deny", "boss")]


def test_an_approval_of_other_arguments_or_a_bad_edit_is_refused_and_the_call_still_waits() -> None:
    other = {**approval_decision(_request(), "approve", "ops", "", NOW), "arguments_hash": arguments_hash({"x": 1})}
    assert apply_decision(_waiting(), other, NOW)[0] == "hash_mismatch"
    bad = {**approval_decision(_request(), "edit", "ops", "", NOW, {}), "edited_arguments_json": "[1, 2]"}
    verdict, same = apply_decision(_waiting(), bad, NOW)
    assert verdict == "bad_edit" and same["status"] == PENDING


# -- gate --------------------------------------------------------------------------------
def _gate(decided: dict[tuple[int, int], dict[str, Any]] | None = None) -> ApprovalGate:
    return ApprovalGate({"refund_invoice": _policy(require="always")}, lambda name: f"does {name}", decided or {})


def test_the_gate_holds_only_undecided_calls_that_need_approval() -> None:
    calls = [("lookup_invoice", {"invoice_id": "INV-1"}), ("refund_invoice", {"invoice_id": "INV-1"})]
    with pytest.raises(AwaitingApproval) as held:
        _gate().check(3, calls, lambda index: False, "so far")
    assert [(c.step, c.index, c.tool, c.description) for c in held.value.calls] == [(3, 1, "refund_invoice", "does refund_invoice")]
    assert held.value.answer_so_far == "so far"
    _gate().check(3, calls, lambda index: index == 1)  # its result is recorded: nothing to hold


def _decided(decision: str, edited: object = None, arguments: object = None) -> dict[tuple[int, int], dict[str, Any]]:
    _, closed = apply_decision(_waiting(), approval_decision(_request(), decision, "ops", "too much", NOW, edited), NOW)
    return {(CALL.step, CALL.index): closed}


def test_the_gate_runs_approved_and_edited_arguments_and_returns_a_denial() -> None:
    assert _gate(_decided("approve")).clear(2, 1, CALL.arguments).arguments == CALL.arguments
    edited = {"invoice_id": "INV-1001", "amount": 5}
    assert _gate(_decided("edit", edited)).clear(2, 1, CALL.arguments).arguments == edited
    denied = _gate(_decided("deny")).clear(2, 1, CALL.arguments)
    assert denied.denial is not None and "denied this call: too much" in denied.denial
    _gate(_decided("deny")).check(2, [("lookup", {}), ("refund_invoice", {})], lambda index: False)  # decided: not held


def test_the_gate_refuses_an_approval_of_another_call() -> None:
    cleared = _gate(_decided("approve")).clear(2, 1, {"invoice_id": "INV-9999"})
    assert cleared.denial is not None and "differs from the one a human approved" in cleared.denial
