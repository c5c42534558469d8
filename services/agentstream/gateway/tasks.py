"""``GET /v1/tasks`` (the tenant's latest tasks), ``GET /v1/tasks/{id}``, ``GET /v1/tasks/{id}/events`` (SSE) and
``POST /v1/tasks/{id}/cancel``: a task of the caller's tenant, from the view."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

from agentstream.gateway import task_view, view_rules
from agentstream.cancellation import cancel_record, send_cancel
from agentstream.gateway.api_models import CancelAccepted, CancelRequest, Problem, TaskStatus
from agentstream.gateway.auth import Caller, Operator
from agentstream.gateway.context import Gateway, gateway_of
from agentstream.gateway.ids import parse_last_event_id
from agentstream.gateway.problems import ApiError
from agentstream.gateway.sse import task_stream
from agentstream.tenancy import ACCEPTED, TASK_CANCEL, Principal

router = APIRouter()
TaskId = Annotated[str, Path(min_length=1, max_length=200, description="The id POST /v1/tasks answered.")]
_READ_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 403, 404, 429)}
# Headers that keep an SSE stream unbuffered through nginx and unchanged by caches.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_LIST = 500


def owned_task(gateway: Gateway, principal: Principal, task_id: str) -> dict[str, Any]:
    """The task's view if it is the caller's tenant's; 404 otherwise (another tenant's task
    is answered exactly like a missing one)."""
    return dict(view_rules.owned(gateway.task(task_id), principal.tenant_id, task_id))


@router.get("/v1/tasks", response_model=list[TaskStatus], responses=_READ_ERRORS,
            summary="Your tenant's latest tasks, newest first")
async def list_tasks(
    request: Request, principal: Caller,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST, description="How many tasks at most.")] = 50,
) -> list[dict[str, Any]]:
    views = gateway_of(request).store.recent_tasks(principal.tenant_id, limit)
    return [task_view.public(view) for view in views]


@router.get("/v1/tasks/{task_id}", response_model=TaskStatus, responses=_READ_ERRORS,
            summary="A task's state, route, result, cost and timings")
async def get_task(task_id: TaskId, request: Request, principal: Caller) -> dict[str, Any]:
    return task_view.public(owned_task(gateway_of(request), principal, task_id))


@router.get("/v1/tasks/{task_id}/events", responses={**_READ_ERRORS, 200: {"content": {"text/event-stream": {}}}},
            response_class=StreamingResponse, summary="The task's progress as Server-Sent Events, then its result")
async def task_events(
    task_id: TaskId, request: Request, principal: Caller,
    last_event_id: Annotated[str | None, Header(max_length=40, description="Resume after this event id.")] = None,
) -> StreamingResponse:
    gateway = gateway_of(request)
    owned_task(gateway, principal, task_id)
    try:
        start = parse_last_event_id(last_event_id)
    except ValueError as exc:
        raise ApiError(400, "bad_last_event_id", str(exc)) from None
    return StreamingResponse(task_stream(gateway, request, task_id, start), media_type="text/event-stream",
                             headers=SSE_HEADERS)


@router.post("/v1/tasks/{task_id}/cancel", status_code=202, response_model=CancelAccepted,
             responses={**_READ_ERRORS, **{code: {"model": Problem} for code in (409, 500, 503)}},
             summary="Cancel a task (operator)")
async def cancel_task(task_id: TaskId, request: Request, principal: Operator,
                      body: CancelRequest | None = None) -> CancelAccepted:
    """A TaskCancel on the control topic (agentstream.cancellation): the router drops the task
    if it has not started, a specialist stops it at its next step or while it waits; its
    CANCELED result follows on the results topic (and on this task's SSE stream)."""
    gateway = gateway_of(request)
    view = owned_task(gateway, principal, task_id)
    view_rules.cancelable(view, task_id)
    config = gateway.config
    record = cancel_record(task_id, view["session_id"], principal.tenant_id, principal.subject,
                           body.reason if body else "")
    await asyncio.to_thread(send_cancel, config.bootstrap, config.topology, config.schemas, record)
    gateway.audit.record(principal, TASK_CANCEL, task_id, ACCEPTED, detail=record["reason"])
    return CancelAccepted(task_id=task_id, requested_by=principal.subject)
