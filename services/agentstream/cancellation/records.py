"""The TaskCancel record (schemas/TaskCancel.avsc), what a canceled task's result and
events say, and the stop the agent loop raises. Pure: no Kafka.

A cancel names a task and its session; it is keyed by the session on the ``control``
topic, so partition p of it lands on the router and specialist members that own
partition p of the session's other topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentstream.errors import AgentStreamError
from agentstream.events import now_ms

CANCELED = "CANCELED"  # the TaskResult status, the TaskEvent state and the error code


class TaskCanceled(AgentStreamError):
    """The task was canceled: raised at the agent loop's next step boundary (before a new
    model call or a step's tool calls), never in the middle of one."""

    def __init__(self, cancel: Mapping[str, Any]) -> None:
        super().__init__(cancel_text(cancel))
        self.cancel = dict(cancel)
        # The loop's AgentOutcome so far (usage, partial answer), set as it leaves the loop;
        # None when the run was stopped before its loop began.
        self.outcome: Any = None


def cancel_record(task_id: str, session_id: str, tenant_id: str, requested_by: str, reason: str,
                  requested_at: int | None = None) -> dict[str, Any]:
    """The TaskCancel record asking to cancel ``task_id`` of ``session_id``."""
    for name, value in (("task_id", task_id), ("session_id", session_id)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"A cancel needs a non-empty {name}, got {value!r}.")
    return {"task_id": task_id, "session_id": session_id, "tenant_id": tenant_id or "",
            "requested_by": requested_by or "", "reason": reason or "",
            "requested_at": now_ms() if requested_at is None else requested_at}


def cancel_text(cancel: Mapping[str, Any]) -> str:
    """What the result's error message and the events say of a cancel."""
    return f"canceled by {cancel.get('requested_by') or 'unknown'}: {cancel.get('reason') or 'no reason given'}"


def cancel_error(cancel: Mapping[str, Any]) -> tuple[str, str]:
    """The (code, message) of a canceled task's error."""
    return CANCELED, cancel_text(cancel)


def is_canceled(result: Mapping[str, Any]) -> bool:
    """Whether a SpecialistResult or TaskResult reports a cancel (a specialist says so with
    status FAILED and error code CANCELED: its status enum has no CANCELED)."""
    error = result.get("error")
    return result.get("status") == CANCELED or (isinstance(error, Mapping) and error.get("code") == CANCELED)


def recorded_at(value: Any) -> int | None:
    """The expiry clock of a specialist's ``c/<task_id>`` record: when it was written."""
    at = value.get("at") if isinstance(value, Mapping) else None
    return at if isinstance(at, int) else None
