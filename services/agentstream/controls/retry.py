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


class Retrier:
    """The retries of one model's calls under ``policy``, built once per model.

    A call that succeeds at once (nearly every call) costs one ``try``: the first attempt
    runs outside tenacity, whose ``AsyncRetrying`` (an object per call, with a thread-safe
    future per attempt) is built only once that attempt failed in a way worth retrying,
    and then sees that failure as its own attempt 1, so waits, logs and attempt numbers
    are what they would be had tenacity run the call from the start. One jitter source
    per model, not one seeded from urandom per call: successive draws still spread
    concurrent callers.

    ``sleep`` is tenacity's sleep hook (tests pass a fake one); ``on_retry(error, wait)``
    is called before each retry, which is how callers count retries.
    """

    def __init__(
        self, policy: RetryPolicy, *, sleep: Sleep = asyncio.sleep, rng: random.Random | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        self.policy = policy
        self._sleep = sleep
        self._jitter = rng or random.Random()
        self._on_retry = on_retry

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, retried under the policy; the last error propagates unchanged."""
        try:
            return await fn()
        except Exception as exc:
            if self.policy.max_attempts < 2 or not self.policy.is_retryable(exc):
                raise
            first = exc
        return await self._retried(fn, first)

    async def _retried(self, fn: Callable[[], Awaitable[T]], first: Exception) -> T:
        failed: list[Exception] = [first]

        async def attempt() -> T:
            if failed:
                raise failed.pop()  # attempt 1, already made
            return await fn()

        async for state in self._retrying():
            with state:
                return await attempt()
        raise AssertionError("unreachable: tenacity either returns a result or reraises")  # pragma: no cover

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(self.policy.is_retryable),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        backoff = self.policy.backoff(state.attempt_number, self._jitter)
        hinted = getattr(error, "retry_after", None)
        return max(backoff, hinted) if hinted is not None else backoff

    def _before_sleep(self, state: RetryCallState) -> None:
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
            if self._on_retry is not None:
                self._on_retry(error, delay)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """``await fn()``, retried under ``policy`` (one call; a model keeps a :class:`Retrier`)."""
    return await Retrier(policy, sleep=sleep, rng=rng, on_retry=on_retry).call(fn)
