"""Errors as HTTP answers: every refusal is a ``Problem`` (a code and a sentence naming the
bad value and the fix), the same shape for our own refusals, FastAPI's validation errors
and Starlette's 404/405."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentstream.broker_refusal import broker_refusal
from agentstream.gateway.limits import retry_after_header
from agentstream.runtime.errors import CheckpointError
from agentstream.task_client import TaskClientError

log = logging.getLogger(__name__)


class ApiError(TaskClientError):
    """A refusal with its status, code and message (and headers such as Retry-After). The
    rules both transports share (view_rules.py) raise TaskClientError itself, answered the same."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, code, message)
        self.headers = dict(headers or {})


def problem(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=dict(headers or {}))


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts) + "."


def install(app: FastAPI) -> None:
    @app.exception_handler(TaskClientError)
    async def _api_error(request: Request, exc: TaskClientError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(CheckpointError)
    async def _not_acknowledged(request: Request, exc: CheckpointError) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        refusal = broker_refusal(exc)  # 503 to retry, or 500 refused for good
        after = {"Retry-After": retry_after_header(refusal.retry_after)} if refusal.retry_after else None
        return problem(refusal.status, refusal.code, refusal.message, after)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))
