"""What the view answers, the same for both transports (the gateway's routes and the Kafka
``agentstream.Client``): a tenant's task or 404, whether an approval request is still open,
the pending list, whether a task may be canceled, when a stream's result may go. Pure
logic over view entries, no Kafka, no HTTP; refusals are TaskClientErrors with the
gateway's status and code.

An approval is decided by a decision on the approval-decisions topic as soon as the view
reads it (a second click gets 409 at once), unless the agent that owns it refuses that
decision while the call still waits (a wrong arguments hash, an edit of the wrong shape):
its ERROR event names the decision record by its offset (approvals/records.py
``still_waits``), and the approval is open again. An entry keeps the offsets of its
decisions and of the refused ones, not a flag, because the decision and its refusal travel
on two topics that the view reads in either order. An approval is also closed by what no
decision record says: its task was canceled while it waited (the specialist closes the
wait and emits a CANCELED event, then the supervisor a CANCELED result), its deadline
passed (the specialist denies it, or re-sends the request to the escalation group with a
new deadline, which replaces the request in the view), or its task has ended anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from agentstream.approvals.records import EDIT
from agentstream.cancellation.records import CANCELED
from agentstream.client import new_task
from agentstream.gateway.injection import flag_metadata
from agentstream.task_client import TaskClientError

View = Mapping[str, Any]
PENDING_LIMIT = 1000
# Once the view has every event produced before a task's result, how long its stream waits
# for the terminal progress event the supervisor sends just after the result (it usually
# arrives in the same poll).
RESULT_GRACE_S = 2.0


def not_found(what: str, ident: str) -> TaskClientError:
    """The same answer whether the thing is missing or another tenant's: nothing leaks."""
    return TaskClientError(404, "not_found", f"No {what} {ident!r} for your tenant.")


def owned(view: View | None, tenant_id: str, task_id: str) -> View:
    """The task's view if it is ``tenant_id``'s; 404 otherwise."""
    if view is None or view.get("tenant_id") != tenant_id:
        raise not_found("task", task_id)
    return view


def task_over(view: View | None) -> bool:
    """Whether the task has ended: a result, a terminal STATE event, or its cancel acted on
    (the CANCELED event comes before the result). Not any terminal state: a refused
    decision's ERROR event says REJECTED while the task still waits for the right one."""
    if view is None:
        return False
    return view.get("result") is not None or view.get("terminal_event_offset") is not None or view.get("state") == CANCELED


def on_request(entry: Mapping[str, Any] | None, request: Mapping[str, Any]) -> dict[str, Any]:
    """The approval entry after an ApprovalRequested (an escalation resends it: its
    decisions stay)."""
    return {**(entry or {}), "request": dict(request)}


def on_decision(entry: Mapping[str, Any] | None, offset: int) -> dict[str, Any]:
    """The approval entry after a decision record read at ``offset`` of its topic."""
    found = dict(entry or {"request": None})
    found["decisions"] = sorted({*found.get("decisions", ()), offset})
    return found


def on_refusal(entry: Mapping[str, Any] | None, task_id: str, offset: int) -> dict[str, Any] | None:
    """The approval entry after its agent refused the decision at ``offset`` while the call
    still waits; None (nothing to change) when the entry's request is another task's."""
    found = dict(entry or {"request": None})
    if found["request"] is not None and found["request"]["task_id"] != task_id:
        return None
    found["refused"] = sorted({*found.get("refused", ()), offset})
    return found


def decided(entry: Mapping[str, Any]) -> bool:
    """Whether a decision of the entry counts: one its agent accepted, or has not judged yet."""
    return bool(set(entry.get("decisions", ())) - set(entry.get("refused", ())))


def open_request(entry: Mapping[str, Any] | None, task: View | None, now_ms: int) -> bool:
    """Whether the approval entry (``{"request", "decisions", "refused"}`` of the view)
    waits for a human."""
    if not entry or entry.get("request") is None or decided(entry):
        return False
    return not task_over(task) and int(entry["request"]["deadline"]) > now_ms


def pending(entries: Iterable[Mapping[str, Any]], task_of: Callable[[str], View | None], tenant_id: str,
            now_ms: int) -> list[dict[str, Any]]:
    """The tenant's open approval requests, oldest first (at most PENDING_LIMIT)."""
    found = [dict(entry["request"]) for entry in entries
             if entry.get("request") and entry["request"]["tenant_id"] == tenant_id
             and open_request(entry, task_of(entry["request"]["task_id"]), now_ms)]
    return sorted(found, key=lambda r: r["requested_at"])[:PENDING_LIMIT]


def decidable(entry: Mapping[str, Any] | None, task_of: Callable[[str], View | None], tenant_id: str,
              approval_id: str, now_ms: int) -> dict[str, Any]:
    """The request a decision on ``approval_id`` answers: 404 if it is not the tenant's,
    409 if it was decided or closed already."""
    wanted = (entry or {}).get("request")
    if entry is None or wanted is None or wanted["tenant_id"] != tenant_id:
        raise not_found("approval request", approval_id)
    if decided(entry):
        raise TaskClientError(409, "already_decided", f"Approval {approval_id!r} was decided already; only the first "
                                                      "decision its agent accepts counts (GET /v1/approvals lists the "
                                                      "pending ones).")
    if not open_request(entry, task_of(wanted["task_id"]), now_ms):
        raise TaskClientError(409, "approval_closed", f"Approval {approval_id!r} is closed: its task ended or its "
                                                      "deadline passed (GET /v1/approvals lists the pending ones).")
    return dict(wanted)


def check_decision(decision: str, arguments: object) -> None:
    if decision == EDIT and arguments is None:
        raise TaskClientError(422, "arguments_required", "An edit needs `arguments`: the JSON object the tool runs with.")
    if decision != EDIT and arguments is not None:
        raise TaskClientError(422, "arguments_unexpected",
                              f"`arguments` goes with decision \"edit\", not {decision!r}; send decision \"edit\" to "
                              "run the tool with other arguments.")


def cancelable(view: View, task_id: str) -> None:
    if view.get("result") is not None:
        raise TaskClientError(409, "task_ended", f"Task {task_id!r} has ended already ({view['result']['status']}); "
                                                 "there is nothing to cancel.")


def new_submission(text: str, session_id: str, tenant_id: str, task_id: str, agent: str | None,
                   metadata: Mapping[str, str], budget_usd: float | None) -> dict[str, Any]:
    """The TaskSubmitted of a request, the same from both doors: the injection heuristic's
    flag in its metadata, the caller's budget."""
    task = new_task(text, session_id, tenant_id, task_id=task_id, requested_agent=agent,
                    metadata=flag_metadata(dict(metadata), text))
    task["budget_usd"] = budget_usd
    return task


def check_same_session(earlier: View, session_id: str) -> None:
    """A repeated Idempotency-Key is the same task only in the session it named first (409)."""
    if earlier.get("session_id") not in (None, session_id):  # the id is the tenant's own: only the session can differ
        raise TaskClientError(409, "idempotency_key_reused",
                              f"This Idempotency-Key was used for task {earlier['task_id']!r} in session "
                              f"{earlier.get('session_id')!r}; use a new key for a different task.")


def check_agent(agent: str | None, types: Sequence[str]) -> None:
    if agent is not None and agent not in types:
        raise TaskClientError(422, "unknown_agent", f"Unknown agent {agent!r}; the specialist types are {', '.join(types)}.")


def result_due(view: View, sent_offset: int, settled_for_s: float | None, grace_s: float) -> bool:
    """Whether a stream's result may go now: the task has one, and the terminal progress
    event that follows it (the supervisor's) was sent, or did not come within ``grace_s``
    of the view having every event produced before the result (``settled_for_s`` seconds
    ago; None: not yet, see gateway/stream_gate.py)."""
    if view.get("result") is None:
        return False
    terminal = view.get("terminal_event_offset")
    if terminal is not None and sent_offset >= terminal:
        return True
    return settled_for_s is not None and settled_for_s >= grace_s
