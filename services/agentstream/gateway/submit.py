"""``POST /v1/tasks``: a TaskSubmitted for the caller's tenant, once per Idempotency-Key."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from agentstream.events import TASK_SUBMITTED
from agentstream.gateway import metrics, task_view, view_rules
from agentstream.gateway.api_models import Links, Problem, TaskAccepted, TaskRequest
from agentstream.gateway.auth import Caller
from agentstream.gateway.context import Gateway, gateway_of
from agentstream.gateway.ids import keyed_task_id, random_task_id, session_of
from agentstream.gateway.limits import retry_after_header, seconds_to_next_utc_day
from agentstream.gateway.problems import ApiError
from agentstream.telemetry import tracing
from agentstream.tenancy import ACCEPTED, REFUSED, TASK_SUBMIT, TENANT_BUDGET_SPENT, Principal

router = APIRouter()
BUSY_RETRY_S = 5.0  # a tenant at its cap of tasks in flight: one may finish soon
REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (401, 403, 409, 413, 422, 429, 500, 503)}  # 500/503: broker_refusal.py


def links(task_id: str) -> Links:
    base = f"/v1/tasks/{task_id}"
    return Links(self=base, events=f"{base}/events", cancel=f"{base}/cancel")


@router.post("/v1/tasks", status_code=202, response_model=TaskAccepted, responses=REFUSALS,
             summary="Submit a task (202: accepted; its result comes later)")
async def submit_task(
    body: TaskRequest, request: Request, response: Response, principal: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=255, description="The same key, the same task.")] = None,
    traceparent: Annotated[str | None, Header(max_length=512, description=(
        "W3C Trace Context of the caller: the task joins that trace (used when the gateway exports traces)."))] = None,
) -> TaskAccepted:
    gateway = gateway_of(request)
    view_rules.check_agent(body.agent, gateway.config.topology.specialist_types)
    task_id = keyed_task_id(principal.tenant_id, idempotency_key) if idempotency_key else random_task_id()
    session_id = session_of(task_id, body.session_id)
    earlier = gateway.task(task_id) if idempotency_key else None
    if earlier is not None:
        return _repeated(earlier, session_id, principal, response)
    task = view_rules.new_submission(body.input, session_id, principal.tenant_id, task_id, body.agent, body.metadata,
                                     body.budget_usd)
    _check_admission(gateway, principal, task)
    config = gateway.config
    gateway.remember(task_view.on_submitted(None, task))  # first: a concurrent repeat of the key finds it
    try:
        with tracing.resumed(traceparent):  # an unparsable value starts a trace of its own
            await gateway.producer.send(config.topology.topic("tasks"), config.schemas.encode(TASK_SUBMITTED, task),
                                        session_id)
    except BaseException:
        gateway.forget(task_id)  # not sent: a retry with the key must send it
        raise
    gateway.audit.record(principal, TASK_SUBMIT, task_id, ACCEPTED)
    metrics.submissions().labels(principal.tenant_id, "new").inc()
    response.headers["Location"] = f"/v1/tasks/{task_id}"
    return TaskAccepted(task_id=task_id, session_id=session_id, links=links(task_id), repeated=False)


def _check_admission(gateway: Gateway, principal: Principal, task: dict[str, Any]) -> None:
    """Refuse a task the router would reject for its tenant (daily budget spent, too many
    tasks in flight), from the same tenancy ledger, before it is sent."""
    refused = gateway.ledger.refusal(gateway.config.tenants, task)
    if refused is None:
        return
    wait = seconds_to_next_utc_day(time.time()) if refused.code == TENANT_BUDGET_SPENT else BUSY_RETRY_S
    gateway.audit.record(principal, TASK_SUBMIT, task["task_id"], REFUSED, detail=refused.code)
    raise ApiError(429, refused.code.lower(), refused.reason[:1].upper() + refused.reason[1:] + ".",
                   {"Retry-After": retry_after_header(wait)})


def _repeated(earlier: dict[str, Any], session_id: str, principal: Principal, response: Response) -> TaskAccepted:
    """The key named a task seen before: the same answer, nothing sent again."""
    view_rules.check_same_session(earlier, session_id)
    metrics.submissions().labels(principal.tenant_id, "repeated").inc()
    response.headers["Location"] = f"/v1/tasks/{earlier['task_id']}"
    return TaskAccepted(task_id=earlier["task_id"], session_id=session_id, links=links(earlier["task_id"]), repeated=True)
