"""The gateway's one middleware: refuse an oversized body before it is read (413), and count
and time every request by its route template (a task id is never a label).

A pure ASGI middleware rather than FastAPI's ``@app.middleware("http")``: that one is
Starlette's ``BaseHTTPMiddleware``, which runs every request in a task group of its own with
a memory stream between the two, and wraps ``receive`` so each ``Request.is_disconnected()``
of an open SSE stream goes through it. In a profile of the gateway under load
(bench/gateway_load.py --profile) that machinery, not the routes, was the largest cost.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream.gateway import metrics, problems


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        method = scope["method"]

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The router has set the matched route in the shared scope by now.
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.requests().labels(method, route, str(message["status"])).inc()
                metrics.request_duration().labels(method, route).observe(time.monotonic() - started)
            await send(message)

        length = _header(scope, b"content-length")
        if length.isdigit() and int(length) > self.max_body_bytes:
            refused = problems.problem(413, "body_too_large", f"The request body has {length} bytes; the gateway takes "
                                                              f"at most {self.max_body_bytes}.")
            await refused(scope, receive, send_counted)
            return
        await self.app(scope, receive, send_counted)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""
