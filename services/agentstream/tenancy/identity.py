"""Who a request or a task belongs to: tenants with their limits, and authenticated principals.

Plain frozen values, shared by the gateway (per request) and the router (per task), so
neither depends on how the other reads the tenants file.
"""

from __future__ import annotations

from dataclasses import dataclass

# The roles a credential may carry. A submitter sends tasks and reads its tenant's tasks;
# an operator also decides approvals, cancels tasks and uses the console.
SUBMITTER = "submitter"
OPERATOR = "operator"
ROLES = (SUBMITTER, OPERATOR)


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's limits; None means unlimited."""

    requests_per_minute: int | None = None  # the gateway's per-tenant rate (429 beyond it)
    daily_cost_usd: float | None = None  # spend per UTC day, from the results' usage.cost_usd
    max_running_tasks: int | None = None  # tasks routed and not yet answered, across every session


@dataclass(frozen=True)
class Tenant:
    id: str
    limits: TenantLimits


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the tenant comes from the credential, never from a request body."""

    tenant_id: str
    subject: str  # "key:<name>" for an API key, the token's "sub" for a JWT: what audit records name
    roles: frozenset[str]
