"""Tenancy: tenants and their limits, API keys and JWT bearer tokens, roles, the tenant
ledger (spend per UTC day, tasks in flight) and the audit trail.

The gateway authenticates requests with ``Tenants`` and writes ``AuditLog`` records; the
router enforces the limits of the same tenants file (router/tenant_guard.py). README
"Tenants" describes the file.
"""

from __future__ import annotations

from agentstream.tenancy.admission import TENANT_BUDGET_SPENT, TENANT_BUSY, TENANT_UNKNOWN, Refusal, refusal
from agentstream.tenancy.audit import (
    ACCEPTED,
    APPROVAL_DECIDE,
    AUDIT_TOPIC,
    DLQ_REPLAY,
    REFUSED,
    TASK_CANCEL,
    TASK_REJECT,
    TASK_SUBMIT,
    AuditLog,
    audit_record,
    encode_audit,
)
from agentstream.tenancy.errors import FORBIDDEN, UNAUTHENTICATED, AuthError
from agentstream.tenancy.identity import OPERATOR, ROLES, SUBMITTER, Principal, Tenant, TenantLimits
from agentstream.tenancy.keys import MIN_KEY_CHARS, hash_api_key
from agentstream.tenancy.ledger import TenantLedger, utc_day
from agentstream.tenancy.ledger_reader import LedgerReader
from agentstream.tenancy.tenants import Tenants, load_tenant_limits

__all__ = [
    "ACCEPTED",
    "APPROVAL_DECIDE",
    "AUDIT_TOPIC",
    "DLQ_REPLAY",
    "FORBIDDEN",
    "MIN_KEY_CHARS",
    "OPERATOR",
    "REFUSED",
    "ROLES",
    "SUBMITTER",
    "TASK_CANCEL",
    "TASK_REJECT",
    "TASK_SUBMIT",
    "TENANT_BUDGET_SPENT",
    "TENANT_BUSY",
    "TENANT_UNKNOWN",
    "UNAUTHENTICATED",
    "AuditLog",
    "AuthError",
    "LedgerReader",
    "Principal",
    "Refusal",
    "Tenant",
    "TenantLedger",
    "TenantLimits",
    "Tenants",
    "audit_record",
    "encode_audit",
    "hash_api_key",
    "load_tenant_limits",
    "refusal",
    "utc_day",
]
