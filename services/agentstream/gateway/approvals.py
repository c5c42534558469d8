"""``GET /v1/approvals`` (the tenant's pending requests) and ``POST /v1/approvals/{id}``
(approve, deny or edit): the operator's side of human approval over HTTP. The decision
is the same ApprovalDecision ``agentstream approvals`` produces (approvals/ops.py), with
the approver taken from the credential."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from agentstream.events import now_ms
from agentstream.gateway import view_rules
from agentstream.gateway.api_models import ApprovalDecided, ApprovalDecisionRequest, PendingApproval, Problem
from agentstream.gateway.auth import Operator
from agentstream.gateway.context import gateway_of
from agentstream.gateway.view_store import APPROVALS, approval_key
from agentstream.tenancy import ACCEPTED, APPROVAL_DECIDE

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 403, 404, 409, 422, 429)}
_DECIDE_ERRORS = {**_ERRORS, **{code: {"model": Problem} for code in (500, 503)}}  # the broker's: broker_refusal.py


@router.get("/v1/approvals", response_model=list[PendingApproval], responses=_ERRORS,
            summary="The tool calls of your tenant that wait for a human (operator)")
async def pending_approvals(request: Request, principal: Operator) -> list[dict[str, Any]]:
    gateway = gateway_of(request)
    return view_rules.pending((entry for _, entry in gateway.store.scan(APPROVALS)), gateway.task,
                              principal.tenant_id, now_ms())


@router.post("/v1/approvals/{approval_id}", response_model=ApprovalDecided, responses=_DECIDE_ERRORS,
             summary="Approve, deny or edit a waiting tool call (operator)")
async def decide(
    approval_id: Annotated[str, Path(min_length=1, max_length=300)], body: ApprovalDecisionRequest,
    request: Request, principal: Operator,
) -> ApprovalDecided:
    gateway = gateway_of(request)
    wanted = view_rules.decidable(gateway.store.get(approval_key(approval_id)), gateway.task, principal.tenant_id,
                                  approval_id, now_ms())
    view_rules.check_decision(body.decision, body.arguments)
    record = await asyncio.to_thread(gateway.approvals.decide, approval_id, body.decision, principal.subject,
                                     body.reason, body.arguments, request=wanted)
    gateway.audit.record(principal, APPROVAL_DECIDE, approval_id, ACCEPTED, detail=body.decision)
    return ApprovalDecided(approval_id=approval_id, task_id=record["task_id"], decision=record["decision"],
                           who=record["who"])
