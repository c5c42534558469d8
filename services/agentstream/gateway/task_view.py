"""The materialized view of one task, folded from the records the pipeline writes: its
TaskSubmitted, its TaskEvents and its TaskResult. Pure data logic, no Kafka, no I/O.

The records come from three topics, read side by side, so they may arrive in any order
(a result can be read before the submission that caused it): every fold accepts a view
that lacks the others' parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

View = dict[str, Any]

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "REJECTED", "CANCELED", "EXPIRED", "DEAD_LETTERED"})


def empty(task_id: str) -> View:
    return {"task_id": task_id, "tenant_id": None, "session_id": None, "state": "SUBMITTED", "route": [],
            "requested_agent": None, "metadata": {}, "submitted_at": None, "first_event_at": None,
            "routed_at": None, "last_event_at": None, "events": 0, "last_event_offset": None,
            "terminal_event_offset": None, "result": None, "input_chars": 0}


def on_submitted(view: View | None, task: Mapping[str, Any]) -> View:
    """The view after the task's TaskSubmitted (a repeated submission changes nothing the
    first one set: the router drops it too)."""
    out = dict(view or empty(task["task_id"]))
    if out["submitted_at"] is not None:
        return out
    out.update(tenant_id=out["tenant_id"] or task["tenant_id"], session_id=task["session_id"],
               requested_agent=task.get("requested_agent"), metadata=dict(task.get("metadata") or {}),
               submitted_at=task["submitted_at"], input_chars=len(task.get("input") or ""))
    return out


def on_event(view: View | None, event: Mapping[str, Any], offset: int) -> View:
    """The view after a TaskEvent read at ``offset`` of the task-events topic."""
    out = dict(view or empty(event["task_id"]))
    out["session_id"] = out["session_id"] or event["session_id"]
    out["events"] += 1
    out["last_event_offset"] = offset
    out["first_event_at"] = out["first_event_at"] or event["at"]
    out["last_event_at"] = event["at"]
    if event["kind"] == "ROUTED":
        out["routed_at"] = out["routed_at"] or event["at"]
        out["route"] = _route_of(event["detail"])
    if out["result"] is None:
        # Once the result is in, it is the state: a late event (a cancel or a decision
        # refused after the end, each with a terminal state) does not rewrite it.
        out["state"] = event["state"]
    if event["kind"] == "STATE" and event["state"] in TERMINAL_STATES:
        out["terminal_event_offset"] = offset
    return out


def on_result(view: View | None, result: Mapping[str, Any], offset: int) -> View:
    """The view after the task's TaskResult read at ``offset`` of the results topic; a
    second result (a resend after a crash) keeps the first."""
    out = dict(view or empty(result["task_id"]))
    if out["result"] is not None:
        return out
    usage = dict(result.get("usage") or {})
    out.update(tenant_id=out["tenant_id"] or result["tenant_id"], session_id=out["session_id"] or result["session_id"],
               state=result["status"], route=list(result.get("agents") or out["route"]),
               result={"status": result["status"], "output": result.get("output"), "error": result.get("error"),
                       "agents": list(result.get("agents") or []), "usage": usage,
                       "completed_at": result["completed_at"], "offset": offset})
    return out


def cost_of(view: View) -> float:
    result = view.get("result") or {}
    return float((result.get("usage") or {}).get("cost_usd") or 0.0)


def _route_of(detail: str) -> list[str]:
    """The specialist types of a ROUTED event's detail ("billing,technical tier=... by ...";
    a canary's share reads "billing(candidate)": the type is the name before the bracket)."""
    first = detail.split(" ", 1)[0]
    return [name.split("(", 1)[0] for name in first.split(",") if name]


def public(view: View) -> dict[str, Any]:
    """What ``GET /v1/tasks/{id}`` answers: state, route, result, cost and timings."""
    result = view.get("result")
    submitted = view.get("submitted_at")
    completed = result["completed_at"] if result else None
    return {
        "task_id": view["task_id"], "session_id": view.get("session_id"), "state": view["state"],
        "route": view.get("route") or [], "requested_agent": view.get("requested_agent"),
        "metadata": view.get("metadata") or {}, "events": view.get("events", 0),
        "result": None if result is None else {k: result[k] for k in ("status", "output", "error", "agents")},
        "usage": None if result is None else result["usage"],
        "cost_usd": cost_of(view),
        "timings": {"submitted_at": submitted, "routed_at": view.get("routed_at"),
                    "first_event_at": view.get("first_event_at"), "completed_at": completed,
                    "duration_ms": completed - submitted if completed and submitted else None},
    }
