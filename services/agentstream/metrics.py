"""Prometheus metrics of agentstream (prometheus-client). Metrics are created once, on
first use, in the default registry; a worker serves them on its HTTP port
(telemetry/server.py, ``AGENTSTREAM_METRICS_PORT``). Consumer lag is collected at scrape
time (telemetry/lag_collector.py)."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Histogram


@cache
def retries() -> Counter:
    return Counter("agentstream_retries", "Events sent to a retry tier", ["stage", "error_class", "tier"])


@cache
def dead_letters() -> Counter:
    return Counter("agentstream_dead_letters", "Events dead-lettered", ["stage", "error_class"])


@cache
def parked() -> Counter:
    return Counter("agentstream_parked", "Events parked behind an event of their session in retry", ["stage"])


@cache
def rebalances() -> Counter:
    return Counter("agentstream_rebalances", "Partitions assigned, revoked or lost, per rebalance", ["worker", "change"])


@cache
def restore_seconds() -> Histogram:
    return Histogram("agentstream_restore_seconds", "Time to restore the tables of newly assigned partitions",
                     ["worker"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))


def register_all() -> None:
    """Create every metric now, so a scrape lists each family (its HELP and TYPE) before its
    first event: dashboards and alerts see a 0-series family rather than none."""
    for metric in (retries, dead_letters, parked, rebalances, restore_seconds):
        metric()
