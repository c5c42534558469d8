"""Builders of the event records every stage emits (see schemas/ for the contract)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from agentstream.models.base import Usage

# Schema names, as in schemas/*.avsc.
TASK_SUBMITTED = "TaskSubmitted"
ROUTED_TASK = "RoutedTask"
SPECIALIST_RESULT = "SpecialistResult"
TASK_RESULT = "TaskResult"
TASK_EVENT = "TaskEvent"
APPROVAL_REQUESTED = "ApprovalRequested"
APPROVAL_DECISION = "ApprovalDecision"
AUDIT_RECORD = "AuditRecord"
TASK_CANCEL = "TaskCancel"


def now_ms() -> int:
    return int(time.time() * 1000)


def empty_usage() -> dict[str, Any]:
    return {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "llm_calls": 0, "tool_calls": 0}


def call_usage(usage: Usage) -> dict[str, Any]:
    """The Usage record of one model call (a router's classification)."""
    return {**empty_usage(), "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_usd, "llm_calls": 1}


def task_event(task: Mapping[str, Any], stage: str, kind: str, state: str, detail: str = "") -> dict[str, Any]:
    """A TaskEvent for ``task`` (any record carrying task_id and session_id)."""
    return {
        "task_id": task["task_id"],
        "session_id": task["session_id"],
        "stage": stage,
        "kind": kind,
        "state": state,
        "detail": detail,
        "at": now_ms(),
    }


def task_result(
    task: Mapping[str, Any],
    status: str,
    *,
    output: str | None = None,
    error: tuple[str, str] | Mapping[str, str] | None = None,
    agents: Iterable[str] = (),
    usage: Mapping[str, Any] | None = None,
    behavior_versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A TaskResult for ``task`` (a TaskSubmitted, RoutedTask or SpecialistResult record)."""
    if isinstance(error, tuple):
        error = {"code": error[0], "message": error[1]}
    return {
        "task_id": task["task_id"],
        "session_id": task["session_id"],
        "tenant_id": task["tenant_id"],
        "status": status,
        "output": output,
        "error": dict(error) if error is not None else None,
        "agents": list(agents),
        "usage": {**empty_usage(), **(usage or {})},
        "behavior_versions": dict(behavior_versions or {}),
        "completed_at": now_ms(),
        "submitted_at": task.get("submitted_at"),
    }
