"""``agentstream gateway [--port N] [--tenants FILE]``: check everything, then serve."""

from __future__ import annotations

import argparse
import importlib.util
import os

from confluent_kafka.admin import AdminClient

from agentstream.clients import admin_config
from agentstream.errors import ConfigurationError
from agentstream.runtime.topics import require_topics
from agentstream.serde import SchemaSet
from agentstream.settings import TENANTS_ENV, WorkerSettings
from agentstream.telemetry import tracing
from agentstream.topology import Topology

# The topology's topics the gateway reads or writes (the view's, decisions, cancels, audit).
GATEWAY_TOPICS = ("tasks", "task_events", "results", "approvals", "approval_decisions", "control", "audit")


def run_gateway(args: argparse.Namespace, worker: WorkerSettings, topology: Topology) -> None:
    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise ConfigurationError(f"The gateway needs {module}: pip install 'agentstream[gateway]'.")
    from agentstream.gateway.context import GatewayConfig
    from agentstream.gateway.server import serve
    from agentstream.gateway.settings import GatewaySettings
    from agentstream.tenancy import Tenants

    tenants_path = args.tenants or worker.tenants_path
    if tenants_path is None:
        raise ConfigurationError(f"The gateway needs a tenants file (who may call it): --tenants FILE or {TENANTS_ENV}; "
                                 "README \"Tenants\" shows its format.")
    settings = GatewaySettings.from_env(port=args.port, tenants_path=tenants_path, state_dir=worker.state_dir)
    tenants = Tenants.load(settings.tenants_path)
    # Of the optional ones (approvals, decisions, control), those the app declares: an app
    # without human approval has no approvals topics, and its gateway lists no approvals.
    declared = [topology.topic(name) for name in GATEWAY_TOPICS if topology.declares(name)]
    require_topics(AdminClient(admin_config(worker.bootstrap)), declared, worker.bootstrap)
    tracing.setup("gateway", os.environ)  # OTLP export only when an endpoint is set, as for workers
    serve(GatewayConfig(settings, worker.bootstrap, topology, SchemaSet.load(), tenants))
