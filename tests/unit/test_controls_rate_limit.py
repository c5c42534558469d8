"""Token buckets: requests and tokens per minute, a consumer group's shared quota."""

from __future__ import annotations

import asyncio

import pytest

from agentstream.controls import (
    ManualClock,
    ModelQuota,
    RateLimiter,
    RateLimiters,
    effective_quota,
    members_from_assignment,
)
from agentstream.errors import ConfigurationError


def _times(limiter: RateLimiter, clock: ManualClock, count: int, tokens: int = 0) -> list[float]:
    async def scenario() -> list[float]:
        granted: list[float] = []
        for _ in range(count):
            await limiter.acquire(tokens)
            granted.append(clock.now())
        return granted

    return asyncio.run(scenario())


def _assert_rate_held(granted: list[float], per_second: float, burst: float, cost: float = 1.0) -> None:
    """In every window [t_i, t_j] no more than burst + rate * (t_j - t_i) was granted."""
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            assert (j - i + 1) * cost <= burst + per_second * (granted[j] - start) + 1e-9


def test_requests_per_minute_hold_over_simulated_minutes() -> None:
    clock = ManualClock()
    limiter = RateLimiter(ModelQuota(requests_per_minute=60), burst_s=5, clock=clock)
    granted = _times(limiter, clock, 200)
    _assert_rate_held(granted, per_second=1.0, burst=5)
    # 200 requests at 60/min with a 5-request burst take (200 - 5) s of simulated time.
    assert granted[-1] == pytest.approx(195)


def test_tokens_per_minute_hold() -> None:
    clock = ManualClock()
    limiter = RateLimiter(ModelQuota(tokens_per_minute=60_000), burst_s=10, clock=clock)
    granted = _times(limiter, clock, 50, tokens=2_000)  # 1,000 tokens/s, burst 10,000
    _assert_rate_held(granted, per_second=1_000, burst=10_000, cost=2_000)
    assert granted[-1] == pytest.approx((50 * 2_000 - 10_000) / 1_000)


def test_concurrent_callers_share_the_rate() -> None:
    clock = ManualClock()
    limiter = RateLimiter(ModelQuota(requests_per_minute=120), burst_s=1, clock=clock)

    async def scenario() -> list[float]:
        granted: list[float] = []

        async def one() -> None:
            await limiter.acquire()
            granted.append(clock.now())

        await asyncio.gather(*(one() for _ in range(40)))
        return sorted(granted)

    granted = asyncio.run(scenario())
    _assert_rate_held(granted, per_second=2.0, burst=2.0)
    assert len(granted) == 40


def test_a_request_bigger_than_the_burst_goes_into_debt_not_deadlock() -> None:
    clock = ManualClock()
    limiter = RateLimiter(ModelQuota(tokens_per_minute=600), burst_s=10, clock=clock)  # 10/s, burst 100
    granted = _times(limiter, clock, 3, tokens=500)
    # The first waits for nothing, each later one for the previous one's debt.
    assert granted == pytest.approx([0.0, 50.0, 100.0])


def test_settle_refunds_an_overestimate() -> None:
    clock = ManualClock()
    limiter = RateLimiter(ModelQuota(tokens_per_minute=600), burst_s=10, clock=clock)
    granted_before = _times(limiter, clock, 1, tokens=100)
    limiter.settle(reserved=100, used=10)
    assert _times(limiter, clock, 1, tokens=90) == granted_before  # no wait: 90 came back


def test_each_member_takes_its_share_of_the_group_quota() -> None:
    quota = ModelQuota(requests_per_minute=600, tokens_per_minute=90_000)
    assert effective_quota(quota, 3) == ModelQuota(200, 30_000)
    assert members_from_assignment(owned_partitions=4, total_partitions=12) == 3
    assert members_from_assignment(owned_partitions=5, total_partitions=12) == pytest.approx(2.4)
    assert members_from_assignment(owned_partitions=0, total_partitions=12) == 12  # finishing in-flight work
    with pytest.raises(ConfigurationError, match="total_partitions"):
        members_from_assignment(1, 0)
    with pytest.raises(ConfigurationError, match="at least 1 member"):
        effective_quota(quota, 0.5)


def test_a_rebalance_rescales_the_rate() -> None:
    clock = ManualClock()
    limiter = RateLimiter(ModelQuota(requests_per_minute=120), burst_s=1, clock=clock)
    limiter.set_members(4)  # 30/min: one every 2 s
    assert limiter.effective.requests_per_minute == 30
    granted = _times(limiter, clock, 10)
    _assert_rate_held(granted, per_second=0.5, burst=1)
    assert granted[-1] == pytest.approx(18)


def test_the_registry_limits_only_models_with_a_quota_and_rescales_all() -> None:
    limiters = RateLimiters({"openai:gpt-4o": ModelQuota(requests_per_minute=100)}, clock=ManualClock())
    assert limiters.for_model("scripted:default") is None
    limiter = limiters.for_model("openai:gpt-4o")
    assert limiter is not None and limiter is limiters.for_model("openai:gpt-4o")
    limiters.set_members(2)
    assert limiter.effective.requests_per_minute == 50
    assert limiters.for_model("openai:gpt-4o") is limiter


def test_quotas_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="requests_per_minute must be positive"):
        ModelQuota(requests_per_minute=0)
