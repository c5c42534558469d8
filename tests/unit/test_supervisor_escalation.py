"""The escalate verdict as a wait for a human (supervisor/escalation.py): the approval
record and request it makes, what approve, edit and deny publish, that a second decision
changes nothing, the deadline's outcomes, the records' expiry, and the topology setting."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentstream.approvals.policy import DeadlinePolicy
from agentstream.approvals.records import (
    APPROVE, DENY, EDIT, PENDING, apply_decision, approval_decision, approval_requested, arguments_hash, closed_by_cancel,
    escalated,
)
from agentstream.approvals.timers import PartitionDeadlines
from agentstream.cancellation.records import cancel_record
from agentstream.errors import ConfigurationError
from agentstream.events import now_ms
from agentstream.supervisor.app import final_result
from agentstream.supervisor.cancels import cancel_entry, cancel_key, cancel_recorded_at, canceled_result
from agentstream.supervisor.combine import PARTIAL_FAILURE
from agentstream.supervisor.emitter import marker_written_at
from agentstream.supervisor.escalation import (
    PUBLISH_TOOL, edit_refused, escalated_marker, escalation_id, held, is_escalated, needs_human, outcome, request_task,
)
from agentstream.supervisor.review import NEEDS_HUMAN_REVIEW, Review, reviewed
from agentstream.topology import SupervisionSettings, load_topology
from tests.unit.test_supervisor_review import MODEL, REPO, RESULTS, _result, _topology_with

NOW = 1_700_000_000_000
DRAFT = "We refund INV-7 twice."
WHY = "A double refund needs a manager."
POLICY = DeadlinePolicy(deadline_s=60)


def _escalated(results: list[dict[str, Any]] = RESULTS) -> tuple[dict[str, Any], dict[str, Any]]:
    """The combine of ``results`` and the review's escalation of it."""
    combined = final_result(results, results)
    return combined, reviewed(combined, Review("escalate", DRAFT, WHY, None, 0.7), "openai:m")


def _record(results: list[dict[str, Any]] = RESULTS, policy: DeadlinePolicy = POLICY) -> dict[str, Any]:
    combined, decided = _escalated(results)
    return held("supervisor", decided, combined["error"], "Refund INV-7 twice", policy, NOW)


def _decide(record: dict[str, Any], decision: str, who: str = "alice", why: str = "", edited: object = None) -> Any:
    request = approval_requested(record, request_task(record), "supervisor")
    return apply_decision(record, approval_decision(request, decision, who, why, NOW + 5, edited), NOW + 5)


def test_an_escalation_is_a_pending_publish_answer_call_with_the_draft_and_the_reason() -> None:
    combined, decided = _escalated()
    assert needs_human(decided) and not needs_human(combined)
    record = held("supervisor", decided, combined["error"], "Refund INV-7 twice", POLICY, NOW)
    assert record["approval_id"] == escalation_id("supervisor", "t-1") == "supervisor:t-1:escalate"
    assert (record["tool"], record["arguments"], record["status"]) == (PUBLISH_TOOL, {"answer": DRAFT}, PENDING)
    assert record["deadline"] == NOW + 60_000 and record["on_deadline"] == DENY
    assert record["result"] == decided and record["combined_error"] is None
    request = approval_requested(record, request_task(record), "supervisor")
    assert (request["agent_type"], request["tenant_id"], request["input"]) == ("supervisor", "acme", "Refund INV-7 twice")
    assert json.loads(request["arguments_json"]) == {"answer": DRAFT}
    assert request["arguments_hash"] == arguments_hash({"answer": DRAFT})
    assert request["answer_so_far"] == DRAFT and WHY in request["tool_description"]


def test_approve_publishes_the_draft_completed_with_the_combines_own_error() -> None:
    partial = [RESULTS[0], _result("billing", None, "FAILED")]
    verdict, record = _decide(_record(partial), APPROVE)
    assert verdict == "applied"
    published = outcome(record)
    assert (published["status"], published["output"]) == ("COMPLETED", DRAFT)
    assert published["error"]["code"] == PARTIAL_FAILURE  # the combine's, not NEEDS_HUMAN_REVIEW
    assert published["review"]["verdict"] == "escalate" and published["agents"] == ["account", "billing"]
    assert outcome(_decide(_record(), APPROVE)[1])["error"] is None


def test_an_edited_answer_is_published_instead_of_the_draft() -> None:
    verdict, record = _decide(_record(), EDIT, edited={"answer": "We refund INV-7 once."})
    assert verdict == "applied"
    assert (outcome(record)["status"], outcome(record)["output"]) == ("COMPLETED", "We refund INV-7 once.")


@pytest.mark.parametrize("edited", ['{"answer": "  "}', '{"answer": 3}', '{"text": "x"}', '{"answer": "x", "y": 1}',
                                    '["x"]', "not json"])
def test_an_edit_that_is_not_one_answer_is_refused_naming_the_shape(edited: str) -> None:
    decision = {"decision": EDIT, "edited_arguments_json": edited}
    assert edit_refused(decision) == (f'the edited arguments of publish_answer must be {{"answer": "<text>"}}, '
                                      f"got {edited!r}")
    assert edit_refused({"decision": APPROVE, "edited_arguments_json": None}) is None


def test_deny_publishes_failed_for_a_human_with_the_reason_and_no_answer() -> None:
    verdict, record = _decide(_record(), DENY, "bob", "Never refund twice.")
    assert verdict == "applied"
    published = outcome(record)
    assert (published["status"], published["output"]) == ("FAILED", None)
    assert published["error"] == {"code": NEEDS_HUMAN_REVIEW, "message": "denied by bob: Never refund twice."}


def test_a_second_decision_is_recorded_and_changes_nothing() -> None:
    _, first = _decide(_record(), APPROVE, "alice")
    verdict, second = _decide(first, DENY, "bob", "too late")
    assert verdict == "duplicate"
    assert second["status"] == APPROVE and [d["who"] for d in second["ignored"]] == ["bob"]
    assert outcome(second) == outcome(first)


def test_a_cancel_closes_the_wait_with_a_canceled_result_and_a_later_decision_is_a_second_one() -> None:
    closed = closed_by_cancel(_record(), {"requested_by": "carol", "reason": "customer withdrew"}, NOW + 9)
    published = outcome(closed)
    assert (published["status"], published["output"]) == ("CANCELED", None)
    assert published["error"] == {"code": "CANCELED", "message": "canceled by carol: customer withdrew"}
    verdict, after = _decide(closed, APPROVE)
    assert verdict == "duplicate" and outcome(after) == published


def test_a_cancel_recorded_before_the_hold_makes_the_draft_a_canceled_result_and_expires() -> None:
    cancel = cancel_record("t-1", "s-1", "acme", "carol", "customer withdrew", NOW)
    entry = cancel_entry(cancel, NOW + 3)
    assert cancel_key("t-1") == "c/t-1"
    _, decided = _escalated()
    stopped = canceled_result(decided, entry)
    assert (stopped["status"], stopped["output"]) == ("CANCELED", None) and not needs_human(stopped)
    assert stopped["error"] == {"code": "CANCELED", "message": "canceled by carol: customer withdrew"}
    assert stopped["usage"] == decided["usage"] and stopped["task_id"] == "t-1"  # the review's call still counts
    # Expires like a "sent" marker, from when it was written; nothing else counts as one.
    assert marker_written_at(entry) == cancel_recorded_at(entry) == NOW + 3
    assert cancel_recorded_at(_record()) is None and cancel_recorded_at({"cancel": "x", "at": 1}) is None


def test_at_the_deadline_the_policy_denies_or_asks_the_escalation_group_once() -> None:
    assert escalated(_record(), NOW + 60_000) is None  # on_deadline: deny (the default)
    raised = escalated(_record(policy=DeadlinePolicy(deadline_s=60, on_deadline="escalate", escalate_to="leads")),
                       NOW + 60_000)
    assert raised is not None
    assert (raised["approvers"], raised["deadline"], raised["on_deadline"]) == ("leads", NOW + 120_000, DENY)
    assert escalated(raised, NOW + 120_000) is None  # denied at the second deadline


def test_a_decided_approval_record_expires_like_a_sent_marker_and_a_waiting_one_never() -> None:
    record = _record()
    marker = escalated_marker(record, None)
    assert is_escalated(marker) and not is_escalated({"state": "sent"}) and not is_escalated(None)
    assert marker_written_at(record) is None and marker_written_at(marker) is None
    assert marker_written_at(_decide(record, DENY, why="no")[1]) == NOW + 5
    assert marker_written_at({"state": "sent", "at": 7}) == 7


def test_escalations_wait_for_a_human_by_default_with_the_approvals_deadline(tmp_path: Path) -> None:
    settings = SupervisionSettings.model_validate({"model": MODEL})
    assert (settings.escalate, settings.approval) == (None, DeadlinePolicy())
    assert settings.approval.deadline_s == 86400 and settings.approval.on_deadline == "deny"
    assert load_topology(_topology_with(tmp_path, "supervisor", {"model": MODEL})).escalation("supervisor") == "approval"


def _document_review_with(tmp_path: Path, supervision: dict[str, Any]) -> Path:
    """The document-review app (no approvals topics) with a supervision section."""
    raw = yaml.safe_load((REPO / "examples" / "document_review" / "topology.yaml").read_text())
    raw["agents"]["supervisor"]["supervision"] = supervision
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_an_app_without_the_approval_topics_escalates_as_a_result_and_cannot_ask_for_approval(tmp_path: Path) -> None:
    assert load_topology(_document_review_with(tmp_path, {"model": MODEL})).escalation("supervisor") == "result"
    with pytest.raises(ConfigurationError, match=r"escalate: approval.*\['approvals', 'approval_decisions'\]"):
        load_topology(_document_review_with(tmp_path, {"model": MODEL, "escalate": "approval"}))


@pytest.mark.parametrize(
    ("supervision", "message"),
    [
        ({"escalate": "human"}, "escalate"),
        ({"approval": {"on_deadline": "escalate"}}, "on_deadline: escalate needs escalate_to"),
        ({"approval": {"require": "always"}}, "require"),
    ],
)
def test_a_wrong_escalation_setting_is_refused_at_load(tmp_path: Path, supervision: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_topology(_topology_with(tmp_path, "supervisor", {"model": MODEL, **supervision}))
    assert message in str(caught.value)


def test_a_partitions_timer_fires_once_at_the_earliest_deadline_armed() -> None:
    fired: list[tuple[int, int]] = []

    async def run() -> None:
        done = asyncio.Event()

        def due(partition: int) -> None:
            fired.append((partition, now_ms()))
            done.set()

        deadlines = PartitionDeadlines(due, tick_ms=1)
        start = now_ms()
        deadlines.arm(start + 60_000, 3)
        deadlines.arm(start + 20, 3)  # earlier: replaces the timer
        deadlines.arm(start + 30_000, 3)  # later: the armed one fires first
        await asyncio.wait_for(done.wait(), 10)
        assert fired[0][1] >= start + 20

    asyncio.run(run())
    assert [partition for partition, _ in fired] == [3]
