"""Prometheus metrics of the gateway (prometheus-client, default registry, created on first
use), served on its own ``/metrics`` beside the workers' families it does not touch.

Labels are bounded: ``route`` is the path template (``/v1/tasks/{task_id}``), never a
task id; ``status`` an HTTP status code; ``tenant`` only on the submissions counter (see
agentstream/metrics.py on tenant cardinality).
"""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from agentstream.metrics import LATENCY_BUCKETS


@cache
def requests() -> Counter:
    return Counter("agentstream_gateway_requests", "HTTP requests answered", ["method", "route", "status"])


@cache
def request_duration() -> Histogram:
    return Histogram("agentstream_gateway_request_duration_seconds", "Time to answer a request (to the first byte)",
                     ["method", "route"], buckets=LATENCY_BUCKETS)


@cache
def submissions() -> Counter:
    return Counter("agentstream_gateway_submissions", "Tasks accepted (new or repeated idempotency keys)",
                   ["tenant", "outcome"])


@cache
def sse_streams() -> Gauge:
    return Gauge("agentstream_gateway_sse_streams", "Server-Sent Event streams open now")


@cache
def view_records() -> Gauge:
    return Gauge("agentstream_gateway_view_records", "Records the gateway's view has read since it started")


FAMILIES = (requests, request_duration, submissions, sse_streams, view_records)


def register_all() -> None:
    """Every family now, so a scrape lists them before their first event."""
    for family in FAMILIES:
        family()
