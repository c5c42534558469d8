"""The gateway's FastAPI application: its routes, error answers, request guard and the
lifespan that starts the view, the producer and their threads (and stops them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agentstream import __version__
from agentstream.gateway import approvals, console_files, dlq, metrics, probes, problems, submit, tasks
from agentstream.gateway.context import Gateway, GatewayConfig
from agentstream.gateway.request_guard import RequestGuard

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
    app.add_middleware(RequestGuard, max_body_bytes=config.settings.max_body_bytes)
    return app

