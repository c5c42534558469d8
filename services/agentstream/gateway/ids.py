"""Task ids the gateway hands out, and the SSE event ids (a record's position).

An ``Idempotency-Key`` maps to its task id by a hash of the tenant and the key, so every
replica derives the same id without asking any other: a retried request that reaches
another replica yields the same task, and the router's dedupe drops the second record.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

# A task id from a key: "k-" + 32 hex digits of sha256(tenant NUL key) (128 bits: no collisions in practice).
KEYED_PREFIX = "k-"
RANDOM_PREFIX = "t-"
_KEYED_HEX = 32

# SSE ids: "e<offset>" is a task-events record, "r<offset>" the task's result record.
EVENT_MARK = "e"
RESULT_MARK = "r"


def keyed_task_id(tenant_id: str, key: str) -> str:
    """The task id of ``key`` for ``tenant_id``: the same on every replica, and two tenants
    using the same key get different tasks."""
    digest = hashlib.sha256(f"{tenant_id}\0{key}".encode()).hexdigest()
    return KEYED_PREFIX + digest[:_KEYED_HEX]


def random_task_id() -> str:
    return RANDOM_PREFIX + uuid.uuid4().hex


def session_of(task_id: str, requested: str | None) -> str:
    """The session a task goes to: the caller's, else one of its own named after the task
    (so the same key always lands on the same partition, where the router's dedupe looks)."""
    return requested if requested else f"s-{task_id}"


@dataclass(frozen=True, slots=True)
class Position:
    """Where an SSE client is in a task's stream: after task-events ``offset`` (-1: before
    the first), or past the result (``done``)."""

    offset: int = -1
    done: bool = False


def event_id(offset: int) -> str:
    return f"{EVENT_MARK}{offset}"


def result_id(offset: int) -> str:
    return f"{RESULT_MARK}{offset}"


def parse_last_event_id(value: str | None) -> Position:
    """The position a ``Last-Event-ID`` header names; ValueError names a malformed one."""
    if value is None or not value.strip():
        return Position()
    text = value.strip()
    mark, digits = text[:1], text[1:]
    if mark not in (EVENT_MARK, RESULT_MARK) or not digits.isdigit():
        raise ValueError(f"Last-Event-ID {value!r} is not an id this gateway sent; "
                         f"ids look like {event_id(41)!r} or {result_id(7)!r} (reconnect without it to start over).")
    return Position(offset=int(digits), done=mark == RESULT_MARK)
