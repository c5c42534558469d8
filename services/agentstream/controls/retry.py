"""Retries of one model call: transient errors only, exponential back-off with jitter.

What is retried: ``TransientModelError`` (rate limited, timeout, 5xx, connection), never
``PermanentModelError`` (auth, bad request, context too long: the same request fails the
same way) and never ``CircuitOpenError`` (the breaker just said this model is down).
A provider's ``retry_after`` is a floor for the wait, not a suggestion: retrying sooner
only earns another 429. A ``retry_after`` longer than ``max_retry_after_s`` ends the
retries at once — holding a session for minutes inside one call is worse than moving to
a fallback model or the retry topics, which wait without blocking anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from agentstream.controls.errors import CircuitOpenError
from agentstream.errors import ConfigurationError
from agentstream.models.errors import TransientModelError

log = logging.getLogger(__name__)

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
OnRetry = Callable[[BaseException, float], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How persistent one call is.

    ``max_attempts`` counts the first try (1 = no retries). The n-th retry waits a random
    time in ``[b/2, b]`` with ``b = min(max_backoff_s, initial_backoff_s * 2**(n-1))``
    ("equal jitter": concurrent callers spread out, yet the wait still grows), or the
    provider's ``retry_after`` when that is longer.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}.")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ConfigurationError(
                "RetryPolicy needs 0 <= initial_backoff_s <= max_backoff_s, "
                f"got {self.initial_backoff_s} and {self.max_backoff_s}."
            )

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """The jittered wait before retry ``retry_number`` (1-based), before retry-after."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (retry_number - 1))
        return rng.uniform(ceiling / 2, ceiling)

    def is_retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, TransientModelError) or isinstance(exc, CircuitOpenError):
            return False
        return exc.retry_after is None or exc.retry_after <= self.max_retry_after_s


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """``await fn()``, retried under ``policy``; the last error propagates unchanged.

    ``sleep`` is tenacity's sleep hook (tests pass a fake one); ``on_retry(error, wait)``
    is called before each retry, which is how callers count retries.
    """
    jitter = rng or random.Random()

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        backoff = policy.backoff(state.attempt_number, jitter)
        hinted = getattr(error, "retry_after", None)
        return max(backoff, hinted) if hinted is not None else backoff

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        if error is not None:
            log.info(
                "model call retry %d after %s: %s (wait %.2fs)",
                state.attempt_number,
                type(error).__name__,
                error,
                delay,
            )
            if on_retry is not None:
                on_retry(error, delay)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=retry_if_exception(policy.is_retryable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await fn()
    raise AssertionError("unreachable: tenacity either returns a result or reraises")  # pragma: no cover
