"""Whether a tenant may start another task: known, within its daily budget, under its cap of
tasks in flight. Pure: the router asks it in its commit path with the ledger's figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agentstream.tenancy.identity import Tenant
from agentstream.tenancy.ledger import TenantLedger, utc_day

# The error codes of a REJECTED result the router gives for a tenant.
TENANT_UNKNOWN = "TENANT_UNKNOWN"
TENANT_BUDGET_SPENT = "TENANT_BUDGET_SPENT"
TENANT_BUSY = "TENANT_BUSY"


class TenantLookup(Protocol):
    def get(self, tenant_id: str) -> Tenant | None: ...


@dataclass(frozen=True)
class Refusal:
    code: str
    reason: str


def refusal(tenants: TenantLookup, ledger: TenantLedger, task: Mapping[str, Any], now_ms: int) -> Refusal | None:
    """Why ``task`` (a TaskSubmitted) may not start for its tenant, or None when it may."""
    tenant_id = task["tenant_id"]
    tenant = tenants.get(tenant_id)
    if tenant is None:
        return Refusal(TENANT_UNKNOWN, f"tenant {tenant_id!r} is not in the tenants file; add it there, "
                                       "or submit with a tenant id the file lists")
    budget = tenant.limits.daily_cost_usd
    spent = ledger.spent(tenant_id, utc_day(now_ms))
    if budget is not None and spent >= budget:
        return Refusal(TENANT_BUDGET_SPENT, f"tenant {tenant_id!r} has spent ${spent:.4f} today (UTC), its daily budget "
                                            f"is ${budget:.2f}; tasks are accepted again from 00:00 UTC")
    cap = tenant.limits.max_running_tasks
    earlier = ledger.in_flight_before(tenant_id, task)
    if cap is not None and earlier >= cap:
        return Refusal(TENANT_BUSY, f"tenant {tenant_id!r} has {earlier} tasks in flight, its cap is {cap}; "
                                    "submit more once earlier ones have results")
    return None
