"""A cancel the supervisor receives before the task waits for a human (its review is
running, its specialists have not all answered, or a revision is out): recorded as
``c/<task_id>`` in the supervisor's ``dedupe`` table, written through, so it survives a
kill -9; the task's decision reads it — before a review starts and after one ends, the
supervisor's step boundaries — and publishes the one CANCELED result instead of the
review's answer or an escalation. Pure; supervisor/escalator.py writes and reads.

The records expire ``dedupe.retention_s`` after they were written, like "sent" markers
(supervisor/emitter.py marker_written_at), long after any task they can name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentstream.cancellation.records import CANCELED, cancel_error

CANCEL_KEY = "c/"

Record = dict[str, Any]


def cancel_key(task_id: str) -> str:
    return f"{CANCEL_KEY}{task_id}"


def cancel_entry(cancel: Mapping[str, Any], now: int) -> Record:
    """The ``c/`` record of the TaskCancel ``cancel``, received at ``now``."""
    return {"cancel": dict(cancel), "at": now}


def cancel_recorded_at(value: Any) -> int | None:
    """When a ``c/`` record was written (its expiry clock); None for anything else."""
    if not isinstance(value, Mapping) or not isinstance(value.get("cancel"), Mapping):
        return None
    at = value.get("at")
    return at if isinstance(at, int) else None


def canceled_result(final: Mapping[str, Any], entry: Mapping[str, Any]) -> Record:
    """``final`` (the combine, or the review's answer or escalation) as the task's CANCELED
    result by the cancel of ``entry``: no answer; its usage still counts what was spent."""
    code, message = cancel_error(entry["cancel"])
    return {**final, "status": CANCELED, "output": None, "error": {"code": code, "message": message}}
