"""A worker's HTTP port: Prometheus metrics and its liveness and readiness probes."""

from agentstream.telemetry.probe import check
from agentstream.telemetry.server import HealthServer

__all__ = ["HealthServer", "check"]
