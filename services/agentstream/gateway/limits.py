"""The per-tenant request rate the gateway applies: a token bucket per tenant, and the
Retry-After of a refusal. (The daily budget and the cap of tasks in flight are the
tenancy ledger's decision, the same the router makes: tenancy/admission.py.)

The buckets live in this process: with N replicas behind a load balancer a tenant gets up
to N times its rate (README "HTTP gateway"). Pure logic with an injected clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per tenant: ``per_minute`` requests a minute, bursts up to that many."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant_id: str, per_minute: int) -> float:
        """0.0 if the request may go; else the seconds until it may (for Retry-After)."""
        now = self._clock()
        rate = per_minute / 60.0
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            bucket = self._buckets[tenant_id] = _Bucket(float(per_minute), now)
        bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, at least 1 (a 0 would invite an immediate retry)."""
    return str(max(1, math.ceil(seconds)))


def seconds_to_next_utc_day(now_s: float) -> float:
    return SECONDS_PER_DAY - (now_s % SECONDS_PER_DAY)
