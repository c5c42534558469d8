"""Python clients of the HTTP gateway (``agentstream gateway``): ``GatewayClient`` (sync)
and ``AsyncGatewayClient`` (asyncio), the same methods on both:

    submit(text, ...) -> task_id        (idempotency_key: the same key, the same task)
    task(task_id) -> dict               (state, route, result, cost, timings)
    result(task_id, timeout) -> dict    (the task once it has a result)
    events(task_id, after=None)         (its progress as StreamEvents, resumable from an event id)
    approvals() / approve / deny / edit / cancel

httpx does the HTTP (the ``client`` extra: ``pip install 'agentstream[client]'``); a
refusal raises GatewayError with the gateway's status, code and message. Both follow the
shape of task_client.py (TaskClient, AsyncTaskClient), as ``agentstream.Client`` does over
Kafka.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from agentstream.task_client import StreamEvent, TaskClientError

API_KEY_HEADER = "X-API-Key"
POLL_S = 0.5  # result(): how often the task is asked for while it has no result


class GatewayError(TaskClientError):
    """The gateway refused a request: ``status`` (HTTP), ``code`` and the message it sent;
    ``retry_after`` in seconds when it said (429, 503). Catch TaskClientError to handle the
    Kafka client's refusals (the same statuses and codes) too."""


GatewayEvent = StreamEvent  # one SSE message; the name the gateway client had before the shared shape


class SseParser:
    """Server-Sent Events from lines (the text/event-stream format); comments are skipped."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> StreamEvent | None:
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            self._fields[name] = value.removeprefix(" ")
            return None
        fields, self._fields = self._fields, {}
        if "data" not in fields:
            return None
        return StreamEvent(fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"]))


def _headers(api_key: str | None, token: str | None) -> dict[str, str]:
    if (api_key is None) == (token is None):
        raise ValueError("Give the gateway client one credential: api_key=... or token=... (a JWT).")
    return {API_KEY_HEADER: api_key} if api_key is not None else {"Authorization": f"Bearer {token}"}


def _submit_body(text: str, session_id: str | None, agent: str | None, metadata: dict[str, str] | None,
                 budget_usd: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": text, "session_id": session_id, "agent": agent, "metadata": metadata or {},
                            "budget_usd": budget_usd}
    return {key: value for key, value in body.items() if value is not None}


def _decision(decision: str, reason: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"decision": decision, "reason": reason, **({"arguments": arguments} if arguments is not None else {})}


def _checked(response: httpx.Response) -> Any:
    """The response's JSON, or GatewayError naming what the gateway said."""
    if response.is_success:
        return response.json() if response.content else None
    try:
        problem = response.json()
        code, message = str(problem["code"]), str(problem["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:500]
    retry = response.headers.get("retry-after")
    raise GatewayError(response.status_code, code, message, float(retry) if retry and retry.isdigit() else None)


def _resume(after: str | None) -> dict[str, str]:
    return {"Last-Event-ID": after} if after else {}


class GatewayClient:
    """The gateway at ``url`` (e.g. http://localhost:8080), with an API key or a JWT."""

    def __init__(self, url: str, *, api_key: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=url, headers=_headers(api_key, token), timeout=timeout)

    def submit(self, text: str, *, session_id: str | None = None, agent: str | None = None,
               metadata: dict[str, str] | None = None, budget_usd: float | None = None,
               idempotency_key: str | None = None) -> str:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = _submit_body(text, session_id, agent, metadata, budget_usd)
        return str(_checked(self._http.post("/v1/tasks", json=body, headers=headers))["task_id"])

    def task(self, task_id: str) -> dict[str, Any]:
        found: dict[str, Any] = _checked(self._http.get(f"/v1/tasks/{task_id}"))
        return found

    def result(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The task once it has a result (TimeoutError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.task(task_id)
            if found.get("result") is not None:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Task {task_id!r} has no result after {timeout:.0f} s (state {found['state']}).")
            time.sleep(POLL_S)

    def events(self, task_id: str, after: str | None = None) -> Iterator[StreamEvent]:
        """The task's progress after event ``after``, then its result; ends with the result."""
        parser = SseParser()
        with self._http.stream("GET", f"/v1/tasks/{task_id}/events", headers=_resume(after),
                               timeout=httpx.Timeout(self._http.timeout.connect, read=None)) as response:
            if not response.is_success:
                response.read()
                _checked(response)
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event

    def approvals(self) -> list[dict[str, Any]]:
        pending: list[dict[str, Any]] = _checked(self._http.get("/v1/approvals"))
        return pending

    def approve(self, approval_id: str, reason: str = "") -> dict[str, Any]:
        return self._decide(approval_id, _decision("approve", reason))

    def deny(self, approval_id: str, reason: str) -> dict[str, Any]:
        return self._decide(approval_id, _decision("deny", reason))

    def edit(self, approval_id: str, arguments: dict[str, Any], reason: str = "") -> dict[str, Any]:
        return self._decide(approval_id, _decision("edit", reason, arguments))

    def _decide(self, approval_id: str, body: dict[str, Any]) -> dict[str, Any]:
        decided: dict[str, Any] = _checked(self._http.post(f"/v1/approvals/{approval_id}", json=body))
        return decided

    def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]:
        sent: dict[str, Any] = _checked(self._http.post(f"/v1/tasks/{task_id}/cancel", json={"reason": reason}))
        return sent

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGatewayClient:
    """GatewayClient for asyncio: the same methods, awaited (``events`` is an async iterator)."""

    def __init__(self, url: str, *, api_key: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(base_url=url, headers=_headers(api_key, token), timeout=timeout)

    async def submit(self, text: str, *, session_id: str | None = None, agent: str | None = None,
                     metadata: dict[str, str] | None = None, budget_usd: float | None = None,
                     idempotency_key: str | None = None) -> str:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = _submit_body(text, session_id, agent, metadata, budget_usd)
        return str(_checked(await self._http.post("/v1/tasks", json=body, headers=headers))["task_id"])

    async def task(self, task_id: str) -> dict[str, Any]:
        found: dict[str, Any] = _checked(await self._http.get(f"/v1/tasks/{task_id}"))
        return found

    async def result(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = await self.task(task_id)
            if found.get("result") is not None:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Task {task_id!r} has no result after {timeout:.0f} s (state {found['state']}).")
            await asyncio.sleep(POLL_S)

    async def events(self, task_id: str, after: str | None = None) -> AsyncIterator[StreamEvent]:
        parser = SseParser()
        async with self._http.stream("GET", f"/v1/tasks/{task_id}/events", headers=_resume(after),
                                     timeout=httpx.Timeout(self._http.timeout.connect, read=None)) as response:
            if not response.is_success:
                await response.aread()
                _checked(response)
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event

    async def approvals(self) -> list[dict[str, Any]]:
        pending: list[dict[str, Any]] = _checked(await self._http.get("/v1/approvals"))
        return pending

    async def approve(self, approval_id: str, reason: str = "") -> dict[str, Any]:
        return await self._decide(approval_id, _decision("approve", reason))

    async def deny(self, approval_id: str, reason: str) -> dict[str, Any]:
        return await self._decide(approval_id, _decision("deny", reason))

    async def edit(self, approval_id: str, arguments: dict[str, Any], reason: str = "") -> dict[str, Any]:
        return await self._decide(approval_id, _decision("edit", reason, arguments))

    async def _decide(self, approval_id: str, body: dict[str, Any]) -> dict[str, Any]:
        decided: dict[str, Any] = _checked(await self._http.post(f"/v1/approvals/{approval_id}", json=body))
        return decided

    async def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]:
        sent: dict[str, Any] = _checked(await self._http.post(f"/v1/tasks/{task_id}/cancel", json={"reason": reason}))
        return sent

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
