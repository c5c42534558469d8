"""The one shape of agentstream's task clients, whichever way they reach the pipeline.

``agentstream.Client`` (kafka_client.py) speaks Kafka directly; ``agentstream.GatewayClient``
(gateway_client.py) speaks HTTP to the gateway. Both have the methods of ``TaskClient``
(their asyncio twins those of ``AsyncTaskClient``), answer with the same dicts (the
gateway's JSON bodies), yield the same ``StreamEvent``s with the same ids, and refuse with
a ``TaskClientError`` carrying the gateway's status and code. Code written against the
protocol runs on either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from agentstream.errors import AgentStreamError

# The kinds of StreamEvent: the SSE event names of the gateway's stream, and the Kafka client's.
PROGRESS = "progress"
RESULT = "result"


class TaskClientError(AgentStreamError):
    """A refusal: ``status`` (the HTTP status the gateway answers it with), ``code`` (e.g.
    ``not_found``, ``task_ended``, ``already_decided``) and the message; ``retry_after`` in
    seconds when a retry later may succeed (429, 503)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


@dataclass(frozen=True)
class StreamEvent:
    """One event of a task's stream: ``id`` (pass it as ``after`` to resume; the record's
    position, the same on every gateway replica and in the Kafka client), ``kind``
    ("progress": a TaskEvent, or "result": the task as ``task()`` answers it) and ``data``."""

    id: str
    kind: str
    data: dict[str, Any]


class TaskClient(Protocol):
    """Submit tasks, read their state and events, decide approvals, cancel."""

    def submit(self, text: str, *, session_id: str | None = None, agent: str | None = None,
               metadata: dict[str, str] | None = None, budget_usd: float | None = None,
               idempotency_key: str | None = None) -> str:
        """The task id; the same ``idempotency_key`` twice is the same task, sent once."""

    def task(self, task_id: str) -> dict[str, Any]:
        """State, route, result, usage, cost and timings (TaskClientError 404 if unknown)."""

    def result(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """``task()`` once the task has a result (TimeoutError after ``timeout`` s)."""

    def events(self, task_id: str, after: str | None = None) -> Iterator[StreamEvent]:
        """The task's progress after event ``after``, then its result; ends with the result."""

    def approvals(self) -> list[dict[str, Any]]:
        """The tool calls that wait for a human, oldest first."""

    def approve(self, approval_id: str, reason: str = "") -> dict[str, Any]: ...

    def deny(self, approval_id: str, reason: str) -> dict[str, Any]: ...

    def edit(self, approval_id: str, arguments: dict[str, Any], reason: str = "") -> dict[str, Any]: ...

    def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]: ...

    def close(self) -> None: ...


class AsyncTaskClient(Protocol):
    """TaskClient for asyncio: the same methods, awaited; ``events`` an async iterator."""

    async def submit(self, text: str, *, session_id: str | None = None, agent: str | None = None,
                     metadata: dict[str, str] | None = None, budget_usd: float | None = None,
                     idempotency_key: str | None = None) -> str: ...

    async def task(self, task_id: str) -> dict[str, Any]: ...

    async def result(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]: ...

    def events(self, task_id: str, after: str | None = None) -> AsyncIterator[StreamEvent]: ...

    async def approvals(self) -> list[dict[str, Any]]: ...

    async def approve(self, approval_id: str, reason: str = "") -> dict[str, Any]: ...

    async def deny(self, approval_id: str, reason: str) -> dict[str, Any]: ...

    async def edit(self, approval_id: str, arguments: dict[str, Any], reason: str = "") -> dict[str, Any]: ...

    async def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]: ...

    async def aclose(self) -> None: ...
