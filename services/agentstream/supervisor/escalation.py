"""The escalate verdict as a wait for a human (``supervision.escalate: approval``): the
supervisor holds the reviewed draft, asks for approval of a pseudo-tool call
``publish_answer({"answer": <draft>})`` on the approvals topic, and publishes the task's
one result when a human decides. Pure; supervisor/escalator.py writes, sends and reads.

The wait is two records in the supervisor's ``dedupe`` table (written through, so a
SIGKILL loses nothing): the task's marker in state ``escalated`` (so a redelivered
specialist result finds the task decided, as an "emitting" or "sent" marker does), and the
approval record ``a/<approval_id>``, a specialist's waiting-call record
(approvals/records.py) plus the draft TaskResult and what the request shows a human. A
decision is applied to that record as to a specialist's (apply_decision: the first wins,
a later one is appended to ``ignored``), then the task's marker goes escalated → emitting
→ sent (supervisor/emitter.py). The approval record expires ``dedupe.retention_s`` after
its decision, like a "sent" marker.

Outcomes: approve publishes the draft as the one COMPLETED result (with the combine's own
error, e.g. PARTIAL_FAILURE, not NEEDS_HUMAN_REVIEW); approve with edited arguments
``{"answer": "<text>"}`` publishes that text instead; deny (by a human, or by the deadline
with ``on_deadline: deny``) publishes FAILED with error code NEEDS_HUMAN_REVIEW, the
denial's reason in the message and no output: the draft a human refused is not an answer
(it stays on the approvals topic for ``agentstream approvals show``). A cancel of the task
(``agentstream cancel``) closes the approval and publishes CANCELED, as for a task that
waits at a specialist; a decision after it is a second decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentstream.approvals.policy import DeadlinePolicy
from agentstream.approvals.records import CANCELED as CLOSED_BY_CANCEL
from agentstream.approvals.records import APPROVE, EDIT, PendingCall, approval_prefix, waiting_call
from agentstream.cancellation.records import CANCELED
from agentstream.supervisor.combine import COMPLETED, FAILED
from agentstream.supervisor.review import NEEDS_HUMAN_REVIEW

ESCALATED = "escalated"  # the marker state of a task that waits for a human's decision
PUBLISH_TOOL = "publish_answer"
APPROVAL_KEY = "a/"

Record = dict[str, Any]


def escalation_id(agent: str, task_id: str) -> str:
    """The approval id of a task's escalation by the supervisor ``agent`` (a task is
    escalated at most once). ``agent`` is also the requests' agent_type, so decisions
    naming it reach the supervisor and no specialist (supervisor/escalator.py)."""
    return f"{approval_prefix(agent, task_id)}escalate"


def approval_key(ident: str) -> str:
    return f"{APPROVAL_KEY}{ident}"


def is_escalated(marker: Mapping[str, Any] | None) -> bool:
    return marker is not None and marker.get("state") == ESCALATED


def needs_human(decided: Mapping[str, Any]) -> bool:
    """Whether the reviewed TaskResult ``decided`` is an escalation (review.reviewed)."""
    return (decided.get("error") or {}).get("code") == NEEDS_HUMAN_REVIEW and decided["status"] == FAILED


def held(agent: str, decided: Mapping[str, Any], combined_error: Mapping[str, Any] | None, task_input: str,
         policy: DeadlinePolicy, now: int) -> Record:
    """The approval record of the escalated TaskResult ``decided`` (the review's draft as
    its output, the reason as its error message); ``combined_error``: the combine's error,
    which an approved answer carries."""
    reason = decided["error"]["message"]
    call = PendingCall(0, 0, PUBLISH_TOOL, {"answer": decided.get("output") or ""},
                       f"Publish this answer to the customer as the task's result. The supervisor's review "
                       f"escalated it: {reason}", policy.deadline_s, policy.on_deadline, policy.escalate_to)
    task = {"task_id": decided["task_id"], "session_id": decided["session_id"]}
    record = waiting_call(call, escalation_id(agent, decided["task_id"]), decided["task_id"], task, now, decided.get("output"))
    return {**record, "tenant_id": decided["tenant_id"], "input": task_input, "result": dict(decided),
            "combined_error": dict(combined_error) if combined_error else None}


def escalated_marker(record: Mapping[str, Any], replay: str | None) -> Record:
    """The task's marker while its approval ``record`` waits."""
    return {"state": ESCALATED, "approval_id": record["approval_id"], "replay": replay}


def request_task(record: Mapping[str, Any]) -> Record:
    """The task fields an ApprovalRequested of ``record`` carries (records.approval_requested)."""
    return {key: record[key] for key in ("task_id", "session_id", "tenant_id", "input")}


def edit_refused(decision: Mapping[str, Any]) -> str | None:
    """Why an edit ``decision`` cannot be published, or None: its arguments must be
    ``{"answer": "<text, not blank>"}``."""
    if decision["decision"] != EDIT:
        return None
    try:
        edited = json.loads(decision.get("edited_arguments_json") or "")
    except ValueError:
        edited = None
    if isinstance(edited, dict) and set(edited) == {"answer"} and isinstance(edited["answer"], str) \
            and edited["answer"].strip():
        return None
    return (f'the edited arguments of {PUBLISH_TOOL} must be {{"answer": "<text>"}}, got '
            f"{decision.get('edited_arguments_json')!r:.200}")


def outcome(record: Mapping[str, Any]) -> Record:
    """The one TaskResult of the decided approval ``record`` (decided by a human, by its
    deadline, or closed by a cancel of its task)."""
    draft = dict(record["result"])
    decision = record["decision"]
    if record["status"] in (APPROVE, EDIT):
        return {**draft, "status": COMPLETED, "output": decision["arguments"]["answer"],
                "error": record.get("combined_error")}
    if record["status"] == CLOSED_BY_CANCEL:
        return {**draft, "status": CANCELED, "output": None,
                "error": {"code": CANCELED, "message": f"canceled by {decision.get('who') or 'unknown'}: "
                                                        f"{decision.get('why') or 'no reason given'}"}}
    why = decision.get("why") or "no reason given"
    return {**draft, "status": FAILED, "output": None,
            "error": {"code": NEEDS_HUMAN_REVIEW, "message": f"denied by {decision.get('who') or 'unknown'}: {why}"}}


def closed_at(value: Any) -> int | None:
    """When an approval record was decided (it then expires like a "sent" marker); None
    for one still pending and for anything else in the table."""
    return value.get("closed_at") if isinstance(value, Mapping) and "approval_id" in value and "run" in value else None
