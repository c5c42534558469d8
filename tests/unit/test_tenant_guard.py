"""The router's tenancy at start (router/tenant_guard.py): a tenants file named but missing
stops the router; it never starts without the limits it was told to enforce."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.errors import ConfigurationError
from agentstream.router.tenant_guard import TenantGuard
from agentstream.serde import SchemaSet
from agentstream.settings import TENANTS_ENV, WorkerSettings
from agentstream.topology import DEFAULT_PATH, load_topology

MISSING = Path("/nonexistent/agentstream/tenants.yaml")


def test_a_named_tenants_file_that_is_missing_stops_the_router_naming_it_and_the_fix() -> None:
    settings = WorkerSettings(bootstrap="localhost:9092", tenants_path=MISSING)
    with pytest.raises(ConfigurationError) as raised:
        TenantGuard.build("router", settings, load_topology(DEFAULT_PATH), SchemaSet.load())
    message = str(raised.value)
    assert str(MISSING) in message
    assert "does not start without it" in message
    assert f"unset {TENANTS_ENV} to run without tenant limits" in message


def test_without_a_tenants_file_the_router_builds_no_guard() -> None:
    settings = WorkerSettings(bootstrap="localhost:9092")
    assert TenantGuard.build("router", settings, load_topology(DEFAULT_PATH), SchemaSet.load()) is None
