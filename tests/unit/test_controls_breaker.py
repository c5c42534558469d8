"""The circuit breaker: opens after N consecutive failures, half-opens, recovers."""

from __future__ import annotations

import asyncio

import pytest

from agentstream.controls import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    FaultyModel,
    GuardedModel,
    ManualClock,
    RetryPolicy,
)
from agentstream.models import Message
from agentstream.models.errors import BadRequestError, ModelAuthError, ModelServerError

CONVERSATION = [Message("user", "Reset my password please")]


def _state(breaker: CircuitBreaker) -> CircuitState:
    """Read through a call so the type checker does not pin the state between steps."""
    return breaker.state


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.on_failure()


def test_opens_after_n_consecutive_failures_and_rejects_fast() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("openai:gpt-4o", failure_threshold=3, reset_timeout_s=30, clock=clock)
    _fail(breaker, 2)
    assert _state(breaker) is CircuitState.CLOSED
    _fail(breaker, 1)
    assert _state(breaker) is CircuitState.OPEN
    clock.advance(10)
    with pytest.raises(CircuitOpenError, match="circuit open after 3 consecutive failures") as refused:
        breaker.before_call()
    assert refused.value.model_id == "openai:gpt-4o" and refused.value.retry_after == pytest.approx(20)


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker("m", failure_threshold=3, clock=ManualClock())
    _fail(breaker, 2)
    breaker.before_call()
    breaker.on_success()
    _fail(breaker, 2)
    assert _state(breaker) is CircuitState.CLOSED


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("m", failure_threshold=1, reset_timeout_s=30, clock=clock)
    _fail(breaker, 1)
    clock.advance(30)
    assert _state(breaker) is CircuitState.HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpenError, match="probe call is in flight"):
        breaker.before_call()
    breaker.on_success()
    assert _state(breaker) is CircuitState.CLOSED
    breaker.before_call()


def test_a_failed_probe_reopens_for_a_new_cool_down() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("m", failure_threshold=2, reset_timeout_s=30, clock=clock)
    _fail(breaker, 2)
    clock.advance(31)
    _fail(breaker, 1)  # the probe fails: one failure is enough in half-open
    assert _state(breaker) is CircuitState.OPEN
    clock.advance(29)
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.advance(1)
    breaker.before_call()


def test_an_abandoned_probe_frees_the_slot() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("m", failure_threshold=1, reset_timeout_s=5, clock=clock)
    _fail(breaker, 1)
    clock.advance(5)
    breaker.before_call()
    breaker.on_abandoned()
    breaker.before_call()  # a new probe may go


def test_guarded_model_stops_calling_a_failing_model_then_recovers() -> None:
    clock = ManualClock()
    model = FaultyModel(script=[ModelServerError("HTTP 500")] * 4)
    breaker = CircuitBreaker(model.model_id, failure_threshold=2, reset_timeout_s=60, clock=clock)
    guarded = GuardedModel(model, retry=RetryPolicy(max_attempts=2), breaker=breaker, clock=clock)

    async def scenario() -> None:
        for _ in range(2):  # two calls, each spending its two attempts
            with pytest.raises(ModelServerError):
                await guarded.complete(CONVERSATION, [])
        assert model.calls == 4 and _state(breaker) is CircuitState.OPEN
        with pytest.raises(CircuitOpenError):
            await guarded.complete(CONVERSATION, [])
        assert model.calls == 4  # refused without reaching the provider
        clock.advance(60)
        response = await guarded.complete(CONVERSATION, [])  # the probe succeeds
        assert response.text and _state(breaker) is CircuitState.CLOSED

    asyncio.run(scenario())
    assert guarded.stats.circuit_rejections == 1 and guarded.stats.retries == 2


def test_a_bad_request_says_nothing_about_the_models_health() -> None:
    breaker = CircuitBreaker("m", failure_threshold=1, clock=ManualClock())
    guarded = GuardedModel(FaultyModel(script=[BadRequestError("HTTP 400")]), breaker=breaker)
    with pytest.raises(BadRequestError):
        asyncio.run(guarded.complete(CONVERSATION, []))
    assert _state(breaker) is CircuitState.CLOSED


def test_an_auth_error_counts_as_a_failure() -> None:
    breaker = CircuitBreaker("m", failure_threshold=1, clock=ManualClock())
    guarded = GuardedModel(FaultyModel(script=[ModelAuthError("HTTP 401")]), breaker=breaker)
    with pytest.raises(ModelAuthError):
        asyncio.run(guarded.complete(CONVERSATION, []))
    assert _state(breaker) is CircuitState.OPEN


def test_registry_shares_one_breaker_per_model_id() -> None:
    registry = BreakerRegistry(failure_threshold=1, clock=ManualClock())
    assert registry.for_model("a") is registry.for_model("a")
    assert registry.for_model("a") is not registry.for_model("b")
    _fail(registry.for_model("a"), 1)
    assert registry.states() == {"a": CircuitState.OPEN, "b": CircuitState.CLOSED}
