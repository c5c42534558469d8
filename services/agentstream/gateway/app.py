"""The gateway's FastAPI application: its routes, error answers, request metrics and the
lifespan that starts the view, the producer and their threads (and stops them)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from agentstream import __version__
from agentstream.gateway import approvals, console_files, dlq, metrics, probes, problems, submit, tasks
from agentstream.gateway.context import Gateway, GatewayConfig

DESCRIPTION = """Submit tasks to an agentstream pipeline and follow them over HTTP.

Authenticate with an `X-API-Key` header or an `Authorization: Bearer <JWT>`; the tenant
comes from the credential. Errors are `{"code", "message"}` objects. The operator console
is served at `/console/`."""


def create_app(config: GatewayConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.register_all()
        app.state.gateway = Gateway.start(config)
        try:
            yield
        finally:
            app.state.gateway.stop()

    app = FastAPI(title="agentstream gateway", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    problems.install(app)
    for module in (submit, tasks, approvals, dlq, probes):
        app.include_router(module.router)
    console_files.mount(app)
    app.middleware("http")(_guard(config.settings.max_body_bytes))
    return app


def _guard(max_body_bytes: int) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Refuse an oversized body before it is read (413), and count and time every request
    by its route template (a task id is never a label)."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.monotonic()
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            response: Response = problems.problem(
                413, "body_too_large", f"The request body has {length} bytes; the gateway takes at most {max_body_bytes}.")
        else:
            response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests().labels(request.method, route, str(response.status_code)).inc()
        metrics.request_duration().labels(request.method, route).observe(time.monotonic() - started)
        return response

    return middleware
