"""Who sends a request, as FastAPI dependencies: the credential (an ``X-API-Key`` header or
an ``Authorization: Bearer`` JWT) is checked by the tenants file (agentstream.tenancy),
the tenant's request rate is applied, and the operator role is required where it must be.
Every route that needs a caller depends on ``caller`` or ``operator``, nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from agentstream.gateway.context import gateway_of
from agentstream.gateway.limits import retry_after_header
from agentstream.gateway.problems import ApiError
from agentstream.tenancy import OPERATOR, AuthError, Principal

API_KEY_HEADER = "X-API-Key"
# auto_error=False: a missing credential is our 401 with our message, not FastAPI's 403.
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="A tenant's API key.")
_bearer = HTTPBearer(auto_error=False, description="A JWT naming the tenant (issuer and audience of the tenants file).")


def _refused(exc: AuthError) -> ApiError:
    code = "forbidden" if exc.status == 403 else "unauthenticated"
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return ApiError(exc.status, code, str(exc), headers)


async def caller(
    request: Request,
    api_key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated principal, within its tenant's requests-per-minute."""
    gateway = gateway_of(request)
    tenants = gateway.config.tenants
    authorization = f"{bearer.scheme} {bearer.credentials}" if bearer is not None else None
    try:
        principal = tenants.authenticate(authorization, api_key)
        per_minute = tenants.tenant(principal.tenant_id).limits.requests_per_minute
    except AuthError as exc:
        raise _refused(exc) from None
    if per_minute is not None:
        wait = gateway.limiter.take(principal.tenant_id, per_minute)
        if wait > 0:
            raise ApiError(429, "rate_limited",
                           f"Tenant {principal.tenant_id!r} is over its {per_minute} requests per minute; "
                           f"retry after the Retry-After seconds.", {"Retry-After": retry_after_header(wait)})
    return principal


async def operator(request: Request, principal: Annotated[Principal, Depends(caller)]) -> Principal:
    """The caller, who must hold the operator role (approvals, cancellation)."""
    try:
        gateway_of(request).config.tenants.require_role(principal, OPERATOR)
    except AuthError as exc:
        raise _refused(exc) from None
    return principal


Caller = Annotated[Principal, Depends(caller)]
Operator = Annotated[Principal, Depends(operator)]
