"""Prometheus metrics of agentstream (prometheus-client). Counters are created once, on
first use, in the default registry; a worker exposes them when it starts an HTTP
endpoint (the observability issue)."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter


@cache
def retries() -> Counter:
    return Counter("agentstream_retries", "Events sent to a retry tier", ["stage", "error_class", "tier"])


@cache
def dead_letters() -> Counter:
    return Counter("agentstream_dead_letters", "Events dead-lettered", ["stage", "error_class"])


@cache
def parked() -> Counter:
    return Counter("agentstream_parked", "Events parked behind an event of their session in retry", ["stage"])
