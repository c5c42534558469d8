"""The approval records: ids, the arguments' hash, the ApprovalRequested and
ApprovalDecision records (schemas/), and how a decision is applied to a waiting call.

Pure data logic, no Kafka. A waiting call is kept in the specialist's ``checkpoints``
table as ``a/<approval_id>`` (see :func:`waiting_call`); its ``status`` is ``pending``
until the first decision, then the decision's kind (or ``canceled``: its task was
canceled); later decisions are appended to ``ignored`` and change nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

APPROVE = "approve"
DENY = "deny"
EDIT = "edit"
PENDING = "pending"
CANCELED = "canceled"  # the task was canceled while the call waited (cancellation/)
DECISIONS = (APPROVE, DENY, EDIT)

Verdict = Literal["applied", "duplicate", "hash_mismatch", "bad_edit"]

# The end of a refused decision's TaskEvent detail while its call still waits: the approval
# id as a JSON string and the decision record's offset on the approval-decisions topic,
# which is all a view needs to reopen the approval (gateway/view_rules.py). A JSON string
# cannot hold an unescaped quote, so text the decider quoted earlier in the detail (an
# edit's arguments) cannot pass for this end.
_STILL_WAITS = re.compile(r'; the task still waits \(decision ("(?:[^"\\]|\\.)*") at offset (\d+)\)$')


def arguments_json(arguments: object) -> str:
    """Canonical JSON of a call's arguments: the same arguments give the same text."""
    # The standard library, not jsoncodec: approval records an older worker wrote hold this
    # text's hash, and orjson spells some floats otherwise (and it is one call per approval).
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arguments_hash(arguments: object) -> str:
    """sha256 of the canonical JSON: what a human approved, checked again before the run."""
    return hashlib.sha256(arguments_json(arguments).encode()).hexdigest()


def approval_id(agent_type: str, run: str, step: int, index: int) -> str:
    """The id of the approval of call ``index`` of model step ``step`` of ``run``: the same
    on every replay of the run, so a resumed loop finds its decision."""
    return f"{approval_prefix(agent_type, run)}{step}:{index}"


def approval_prefix(agent_type: str, run: str) -> str:
    """What every approval id of ``run`` starts with."""
    return f"{agent_type}:{run}:"


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A tool call that waits for a human: where it is in the run, and what it would do."""

    step: int
    index: int
    tool: str
    arguments: object
    description: str
    deadline_s: float
    on_deadline: str
    escalate_to: str | None = None


def waiting_call(
    call: PendingCall, ident: str, run: str, task: Mapping[str, Any], now: int, answer_so_far: str | None = None,
) -> dict[str, Any]:
    """The checkpoint record ``a/<approval_id>`` of a call that waits."""
    return {
        "approval_id": ident, "run": run, "task_id": task["task_id"], "session_id": task["session_id"],
        "step": call.step, "index": call.index, "tool": call.tool, "arguments": call.arguments,
        "arguments_hash": arguments_hash(call.arguments), "requested_at": now,
        "deadline": now + int(call.deadline_s * 1000), "on_deadline": call.on_deadline,
        "deadline_s": call.deadline_s, "escalate_to": call.escalate_to, "approvers": "",
        "description": call.description, "answer_so_far": answer_so_far,
        "status": PENDING, "decision": None, "ignored": [], "closed_at": None,
    }


def approval_requested(waiting: Mapping[str, Any], task: Mapping[str, Any], agent_type: str) -> dict[str, Any]:
    """The ApprovalRequested record a human (a UI, a chat bot, the CLI) answers."""
    return {
        "approval_id": waiting["approval_id"], "task_id": task["task_id"], "session_id": task["session_id"],
        "tenant_id": task["tenant_id"], "agent_type": agent_type, "tool": waiting["tool"],
        "arguments_json": arguments_json(waiting["arguments"]), "arguments_hash": waiting["arguments_hash"],
        "input": str(task.get("input") or ""), "answer_so_far": waiting.get("answer_so_far"),
        "tool_description": waiting.get("description") or "", "requested_at": waiting["requested_at"],
        "deadline": waiting["deadline"], "approvers": waiting.get("approvers") or "",
    }


def escalated(waiting: Mapping[str, Any], now: int) -> dict[str, Any] | None:
    """The waiting call passed to its ``escalate_to`` group with a new deadline, at which it
    is denied; None when the policy says deny, or the call was escalated already."""
    if waiting.get("on_deadline") != "escalate" or not waiting.get("escalate_to"):
        return None
    return {**waiting, "approvers": waiting["escalate_to"], "on_deadline": DENY,
            "deadline": now + int(float(waiting["deadline_s"]) * 1000)}


def approval_decision(
    request: Mapping[str, Any], decision: str, who: str, why: str, now: int, edited_arguments: object = None,
) -> dict[str, Any]:
    """An ApprovalDecision answering ``request`` (an ApprovalRequested record)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {list(DECISIONS)}, got {decision!r}")
    edited = arguments_json(edited_arguments) if decision == EDIT else None
    return {
        "approval_id": request["approval_id"], "task_id": request["task_id"], "session_id": request["session_id"],
        "agent_type": request["agent_type"], "decision": decision, "arguments_hash": request["arguments_hash"],
        "edited_arguments_json": edited, "who": who, "why": why, "decided_at": now,
    }


def apply_decision(waiting: Mapping[str, Any], decision: Mapping[str, Any], now: int) -> tuple[Verdict, dict[str, Any]]:
    """The waiting call after ``decision``, and whether the decision took effect.

    A decision that approves must name the hash of the arguments the human saw (it is in
    the request): a different hash means the human approved some other call.
    """
    updated = dict(waiting)
    seen = {key: decision.get(key) for key in ("decision", "who", "why", "decided_at", "edited_arguments_json")}
    if waiting["status"] != PENDING:
        updated["ignored"] = [*waiting.get("ignored", []), seen]
        return "duplicate", updated
    if decision["decision"] != DENY and decision.get("arguments_hash") not in (None, "", waiting["arguments_hash"]):
        return "hash_mismatch", updated
    arguments = waiting["arguments"]
    if decision["decision"] == EDIT:
        try:
            arguments = json.loads(decision.get("edited_arguments_json") or "")
        except ValueError:
            return "bad_edit", updated
        if not isinstance(arguments, dict):
            return "bad_edit", updated
    updated.update(status=decision["decision"], decision={**seen, "arguments": arguments,
                                                          "arguments_hash": arguments_hash(arguments)},
                   closed_at=now)
    return "applied", updated


def still_waits(ident: str, why: str, offset: int) -> str:
    """The detail of a decision refused while its call still waits (a wrong arguments hash,
    a bad edit); ``offset`` is the decision record's on the approval-decisions topic (-1: a
    decision that came from no record, which names none)."""
    text = f"decision for {ident!r} refused: {why}; the task still waits"
    return text if offset < 0 else f"{text} (decision {json.dumps(ident)} at offset {offset})"


def refused_decision(detail: str) -> tuple[str, int] | None:
    """The approval id and decision offset a :func:`still_waits` detail names, else None."""
    found = _STILL_WAITS.search(detail)
    if found is None:
        return None
    try:
        ident = json.loads(found.group(1))
    except ValueError:
        return None
    return (ident, int(found.group(2))) if isinstance(ident, str) else None


def closed_by_cancel(waiting: Mapping[str, Any], cancel: Mapping[str, Any], now: int) -> dict[str, Any]:
    """The waiting call once its task is canceled: closed, so a later decision is
    recorded and ignored like any second decision ("already decided (canceled by ...)")."""
    decision = {"decision": "cancel", "who": cancel.get("requested_by") or "", "why": cancel.get("reason") or "",
                "decided_at": now, "edited_arguments_json": None}
    return {**waiting, "status": CANCELED, "decision": decision, "closed_at": now}


def denial_text(decision: Mapping[str, Any]) -> str:
    """What the model reads as the tool's result when a human denied the call."""
    why = decision.get("why") or "no reason given"
    return f"Error: a human ({decision.get('who') or 'unknown'}) denied this call: {why}. Do not retry it; tell the user."
