"""Token buckets on requests per minute and tokens per minute, per model.

A provider's quota belongs to the API key, and every member of a consumer group uses the
same key; so the configured quota is the whole group's, and each member takes its share:
``effective = quota / members``. A member cannot see the group size, but it sees its
assignment, and with the range assignor its share of the work is its share of the
partitions: ``members_from_assignment(owned, total) = total / owned`` (exactly the member
count when partitions divide evenly). The worker calls ``RateLimiter.set_members`` (or
``RateLimiters.set_members``) from its rebalance callback.

Tokens are reserved before a call from an estimate and settled with the real usage after
it. The bucket may go into debt for a request larger than its burst; later callers then
wait the debt off, so the long-run rate holds even for huge prompts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agentstream.controls.clock import Clock, SystemClock
from agentstream.errors import ConfigurationError

# The bucket holds this many seconds of quota: a quiet worker may start a few calls at
# once, but never runs more than a small slice of the minute ahead of the rate.
DEFAULT_BURST_S = 10.0


@dataclass(frozen=True, slots=True)
class ModelQuota:
    """Per-minute limits of one model (None: unlimited)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"ModelQuota.{name} must be positive or None, got {value}.")


def members_from_assignment(owned_partitions: int, total_partitions: int) -> float:
    """How many equal members the group has, as seen from this member's assignment.

    A member with no partitions left still finishes its in-flight tasks; it is counted
    as owning one partition so those calls neither stall nor exceed a fair share.
    """
    if total_partitions < 1:
        raise ConfigurationError(f"total_partitions must be at least 1, got {total_partitions}.")
    return total_partitions / max(1, min(owned_partitions, total_partitions))


def effective_quota(quota: ModelQuota, members: float) -> ModelQuota:
    """This member's share of the group's ``quota``."""
    if members < 1:
        raise ConfigurationError(f"A consumer group has at least 1 member, got {members}.")

    def share(value: float | None) -> float | None:
        return None if value is None else value / members

    return ModelQuota(share(quota.requests_per_minute), share(quota.tokens_per_minute))


class _Bucket:
    """``rate`` units per second, holding at most ``capacity``; the level may go negative."""

    def __init__(self, per_minute: float, burst_s: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self._at = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` (capped at the capacity, else it never fits) is there."""
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / self.rate)

    def resize(self, per_minute: float, burst_s: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = min(self.level, self.capacity)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits of one model for this member."""

    def __init__(
        self,
        quota: ModelQuota,
        *,
        members: float = 1,
        burst_s: float = DEFAULT_BURST_S,
        clock: Clock | None = None,
    ) -> None:
        if burst_s <= 0:
            raise ConfigurationError(f"burst_s must be positive, got {burst_s}.")
        self.quota = quota
        self.burst_s = burst_s
        self._clock = clock or SystemClock()
        self._members = members
        self.effective = effective_quota(quota, members)
        now = self._clock.now()
        rpm, tpm = self.effective.requests_per_minute, self.effective.tokens_per_minute
        self._requests = _Bucket(rpm, burst_s, now) if rpm is not None else None
        self._tokens = _Bucket(tpm, burst_s, now) if tpm is not None else None
        # FIFO: a caller that waits for a big token grant is not overtaken forever.
        self._lock = asyncio.Lock()

    @property
    def members(self) -> float:
        return self._members

    def set_members(self, members: float) -> None:
        """Take this member's share after a rebalance (see the module docstring)."""
        self.effective = effective_quota(self.quota, members)
        self._members = members
        now = self._clock.now()
        for bucket, per_minute in (
            (self._requests, self.effective.requests_per_minute),
            (self._tokens, self.effective.tokens_per_minute),
        ):
            if bucket is not None and per_minute is not None:
                bucket.refill(now)
                bucket.resize(per_minute, self.burst_s)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request and ``tokens`` tokens are allowed, then take them."""
        async with self._lock:
            while True:
                now = self._clock.now()
                wait = 0.0
                if self._requests is not None:
                    self._requests.refill(now)
                    wait = max(wait, self._requests.wait_for(1))
                if self._tokens is not None:
                    self._tokens.refill(now)
                    wait = max(wait, self._tokens.wait_for(tokens))
                if wait <= 0:
                    break
                await self._clock.sleep(wait)
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens

    def settle(self, reserved: int, used: int) -> None:
        """Correct a reservation with the tokens the call really used (refund or charge)."""
        if self._tokens is not None:
            self._tokens.refill(self._clock.now())
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + reserved - used)


class RateLimiters:
    """One limiter per model id that has a quota; ``set_members`` rescales them all."""

    def __init__(
        self, quotas: dict[str, ModelQuota], *, burst_s: float = DEFAULT_BURST_S, clock: Clock | None = None
    ) -> None:
        self._quotas = dict(quotas)
        self._burst_s = burst_s
        self._clock = clock
        self._members: float = 1
        self._limiters: dict[str, RateLimiter] = {}

    def for_model(self, model_id: str) -> RateLimiter | None:
        """The model's limiter, or None when no quota is configured for it."""
        limiter = self._limiters.get(model_id)
        if limiter is None and model_id in self._quotas:
            limiter = RateLimiter(
                self._quotas[model_id], members=self._members, burst_s=self._burst_s, clock=self._clock
            )
            self._limiters[model_id] = limiter
        return limiter

    def set_members(self, members: float) -> None:
        self._members = members
        for limiter in self._limiters.values():
            limiter.set_members(members)
