"""Retries: transient errors only, exponential back-off with jitter, retry-after honoured."""

from __future__ import annotations

import asyncio
import random

import pytest

from agentstream.controls import (
    CircuitOpenError,
    FaultyModel,
    ManualClock,
    RetryPolicy,
    call_with_retry,
)
from agentstream.controls.retry import Retrier
from agentstream.controls.timeout import call_with_timeout
from agentstream.errors import ConfigurationError
from agentstream.models import Message, ModelResponse
from agentstream.models.errors import (
    BadRequestError,
    ModelAuthError,
    ModelError,
    ModelServerError,
    ModelTimeoutError,
    RateLimitedError,
)

CONVERSATION = [Message("user", "Where is my order 12345?")]


def _retry(model: FaultyModel, policy: RetryPolicy | None = None) -> tuple[ModelResponse, ManualClock, list[float]]:
    clock = ManualClock()
    waits: list[float] = []

    async def scenario() -> ModelResponse:
        return await call_with_retry(
            lambda: model.complete(CONVERSATION, []),
            policy or RetryPolicy(),
            sleep=clock.sleep,
            rng=random.Random(7),
            on_retry=lambda _error, wait: waits.append(wait),
        )

    return asyncio.run(scenario()), clock, waits


def test_a_429_is_retried_no_sooner_than_its_retry_after() -> None:
    model = FaultyModel(script=[RateLimitedError("HTTP 429", retry_after=7.5)])
    response, clock, waits = _retry(model)
    assert response.text and model.calls == 2
    assert waits == clock.slept and len(waits) == 1 and waits[0] >= 7.5


def test_server_errors_back_off_exponentially_with_jitter() -> None:
    model = FaultyModel(script=[ModelServerError("HTTP 500")] * 3)
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=1.0, max_backoff_s=3.0)
    _, _, waits = _retry(model, policy)
    assert model.calls == 4 and len(waits) == 3
    # Retry n waits within [b/2, b], b = min(max, initial * 2**(n-1)): 1, 2, then capped at 3.
    for wait, ceiling in zip(waits, (1.0, 2.0, 3.0), strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_jitter_spreads_concurrent_callers() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0)
    rng = random.Random(1)
    assert len({round(policy.backoff(2, rng), 6) for _ in range(20)}) > 10


@pytest.mark.parametrize(
    "error",
    [ModelAuthError("HTTP 401"), BadRequestError("HTTP 400"), CircuitOpenError("open", retry_after=3.0)],
    ids=["auth", "bad-request", "circuit-open"],
)
def test_permanent_errors_and_an_open_circuit_are_not_retried(error: ModelError) -> None:
    model = FaultyModel(script=[error])
    with pytest.raises(type(error)):
        _retry(model)
    assert model.calls == 1


def test_exhausted_retries_raise_the_last_transient_error() -> None:
    model = FaultyModel(script=[ModelServerError(f"HTTP 50{n}") for n in range(5)])
    with pytest.raises(ModelServerError, match="HTTP 502"):
        _retry(model, RetryPolicy(max_attempts=3))
    assert model.calls == 3


def test_a_retry_after_beyond_the_cap_is_left_to_the_fallback_or_retry_topics() -> None:
    model = FaultyModel(script=[RateLimitedError("HTTP 429", retry_after=3600)])
    with pytest.raises(RateLimitedError):
        _retry(model, RetryPolicy(max_retry_after_s=60))
    assert model.calls == 1


def test_the_policy_rejects_nonsense() -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError, match="initial_backoff_s"):
        RetryPolicy(initial_backoff_s=5, max_backoff_s=1)


def test_the_per_call_timeout_becomes_a_transient_model_timeout() -> None:
    model = FaultyModel(script=["hang"])
    with pytest.raises(ModelTimeoutError, match=r"per-call timeout of 0\.01 s"):
        asyncio.run(call_with_timeout(lambda: model.complete(CONVERSATION, []), 0.01, model.model_id))


def test_an_outside_cancellation_is_not_mistaken_for_a_call_timeout() -> None:
    async def scenario() -> None:
        model = FaultyModel(script=["hang"])
        async with asyncio.timeout(0.01):  # the caller's deadline, shorter than the call's
            await call_with_timeout(lambda: model.complete(CONVERSATION, []), 5.0, model.model_id)

    with pytest.raises(TimeoutError) as caught:
        asyncio.run(scenario())
    assert not isinstance(caught.value, ModelTimeoutError)


def test_one_retrier_serves_concurrent_calls_each_with_its_own_attempts() -> None:
    # A model keeps one Retrier: calls that fail and calls that do not, interleaved on one
    # loop, must each get their own attempt count and waits.
    clock = ManualClock()
    waits: list[float] = []
    retrier = Retrier(RetryPolicy(max_attempts=3, initial_backoff_s=1.0), sleep=clock.sleep, rng=random.Random(3),
                      on_retry=lambda _error, wait: waits.append(wait))
    flaky = FaultyModel(script=[ModelServerError("HTTP 503"), ModelServerError("HTTP 503")])
    failing = FaultyModel(script=[ModelServerError("HTTP 500")] * 3)
    steady = FaultyModel(script=[])

    async def scenario() -> list[object]:
        return await asyncio.gather(
            retrier.call(lambda: flaky.complete(CONVERSATION, [])),
            retrier.call(lambda: failing.complete(CONVERSATION, [])),
            retrier.call(lambda: steady.complete(CONVERSATION, [])),
            return_exceptions=True,
        )

    ok, failed, first_time = asyncio.run(scenario())
    assert isinstance(ok, ModelResponse) and flaky.calls == 3
    assert isinstance(failed, ModelServerError) and failing.calls == 3
    assert isinstance(first_time, ModelResponse) and steady.calls == 1
    assert len(waits) == 4  # two retries each for the flaky and the failing call, none for the steady one
