"""The gateway's ASGI request guard: 413 before the app reads a body, and every answer
counted by method, route template and status."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY

from agentstream.gateway.request_guard import RequestGuard


def _scope(method: str, length: int | None) -> dict[str, Any]:
    headers = [(b"content-length", str(length).encode())] if length is not None else []
    return {"type": "http", "method": method, "path": "/v1/tasks/t1", "headers": headers}


def _run(guard: RequestGuard, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent


def _count(method: str, route: str, status: str) -> float:
    value = REGISTRY.get_sample_value("agentstream_gateway_requests_total", {"method": method, "route": route, "status": status})
    return value or 0.0


def test_an_oversized_body_is_refused_before_the_app_runs() -> None:
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append("app")

    before = _count("POST", "unmatched", "413")
    sent = _run(RequestGuard(app, max_body_bytes=10), _scope("POST", 11))
    assert called == [] and sent[0]["status"] == 413 and b"body_too_large" in sent[1]["body"]
    assert _count("POST", "unmatched", "413") == before + 1


def test_an_answer_is_counted_by_its_route_template_never_the_path() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = SimpleNamespace(path="/v1/tasks/{task_id}")  # what the router sets
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    before = _count("GET", "/v1/tasks/{task_id}", "200")
    sent = _run(RequestGuard(app, max_body_bytes=10), _scope("GET", None))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert _count("GET", "/v1/tasks/{task_id}", "200") == before + 1
