"""``GET /v1/approvals`` (the tenant's pending requests) and ``POST /v1/approvals/{id}``
(approve, deny or edit): the operator's side of human approval over HTTP. The decision
is the same ApprovalDecision ``agentstream approvals`` produces (approvals/ops.py), with
the approver taken from the credential."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from agentstream.approvals.records import EDIT
from agentstream.gateway.api_models import ApprovalDecided, ApprovalDecisionRequest, PendingApproval, Problem
from agentstream.gateway.auth import Operator
from agentstream.gateway.context import Gateway, gateway_of
from agentstream.gateway.problems import ApiError, not_found
from agentstream.gateway.view_store import approval_key
from agentstream.tenancy import ACCEPTED, APPROVAL_DECIDE, Principal

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 403, 404, 409, 422, 429)}
PENDING_LIMIT = 1000


@router.get("/v1/approvals", response_model=list[PendingApproval], responses=_ERRORS,
            summary="The tool calls of your tenant that wait for a human (operator)")
async def pending_approvals(request: Request, principal: Operator) -> list[dict[str, Any]]:
    found = [entry["request"] for _, entry in gateway_of(request).store.scan(b"a/")
             if entry.get("request") and not entry["decided"] and entry["request"]["tenant_id"] == principal.tenant_id]
    return sorted(found, key=lambda r: r["requested_at"])[:PENDING_LIMIT]


@router.post("/v1/approvals/{approval_id}", response_model=ApprovalDecided, responses=_ERRORS,
             summary="Approve, deny or edit a waiting tool call (operator)")
async def decide(
    approval_id: Annotated[str, Path(min_length=1, max_length=300)], body: ApprovalDecisionRequest,
    request: Request, principal: Operator,
) -> ApprovalDecided:
    gateway = gateway_of(request)
    wanted = _request_of(gateway, principal, approval_id)
    _check_arguments(body)
    record = await asyncio.to_thread(gateway.approvals.decide, approval_id, body.decision, principal.subject,
                                     body.reason, body.arguments, request=wanted)
    gateway.audit.record(principal, APPROVAL_DECIDE, approval_id, ACCEPTED, detail=body.decision)
    return ApprovalDecided(approval_id=approval_id, task_id=record["task_id"], decision=record["decision"],
                           who=record["who"])


def _request_of(gateway: Gateway, principal: Principal, approval_id: str) -> dict[str, Any]:
    entry = gateway.store.get(approval_key(approval_id)) or {}
    wanted = entry.get("request")
    if wanted is None or wanted["tenant_id"] != principal.tenant_id:
        raise not_found("approval request", approval_id)
    if entry.get("decided"):
        raise ApiError(409, "already_decided", f"Approval {approval_id!r} was decided already; only the first "
                                               "decision counts (GET /v1/approvals lists the pending ones).")
    return dict(wanted)


def _check_arguments(body: ApprovalDecisionRequest) -> None:
    if body.decision == EDIT and body.arguments is None:
        raise ApiError(422, "arguments_required", "An edit needs `arguments`: the JSON object the tool runs with.")
    if body.decision != EDIT and body.arguments is not None:
        raise ApiError(422, "arguments_unexpected",
                       f"`arguments` goes with decision \"edit\", not {body.decision!r}; send decision \"edit\" to "
                       "run the tool with other arguments.")
