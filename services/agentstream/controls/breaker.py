"""A circuit breaker per model: stop calling a model that keeps failing, probe it later.

States: CLOSED (calls pass; consecutive failures are counted) → OPEN after
``failure_threshold`` consecutive failures (calls are refused at once with
``CircuitOpenError``, so a dead provider costs nothing and the fallback chain moves on
without waiting for timeouts) → HALF_OPEN once ``reset_timeout_s`` has passed (exactly one
probe call is let through; the others are still refused) → CLOSED if the probe succeeds,
OPEN again for another cool-down if it fails.

The breaker sits outside the retries: one failure here is a call whose retries were all
spent, i.e. the model failed for a whole retry budget, not one blip.
"""

from __future__ import annotations

import logging
from enum import Enum

from agentstream import metrics
from agentstream.controls.clock import Clock, SystemClock
from agentstream.controls.errors import CircuitOpenError
from agentstream.errors import ConfigurationError

log = logging.getLogger(__name__)


class CircuitState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """The breaker of one model id. Not thread-safe; one event loop uses it."""

    def __init__(
        self,
        model_id: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError(f"failure_threshold must be at least 1, got {failure_threshold}.")
        if reset_timeout_s < 0:
            raise ConfigurationError(f"reset_timeout_s must not be negative, got {reset_timeout_s}.")
        self.model_id = model_id
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock or SystemClock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        metrics.breaker_changed(model_id, CircuitState.CLOSED.value)

    @property
    def state(self) -> CircuitState:
        """The state now; an OPEN breaker whose cool-down has passed reads HALF_OPEN."""
        if self._state is CircuitState.OPEN and self._clock.now() - self._opened_at >= self.reset_timeout_s:
            return CircuitState.HALF_OPEN
        return self._state

    def before_call(self) -> None:
        """Admit a call or raise ``CircuitOpenError``; an admitted call must end in
        exactly one of ``on_success``, ``on_failure`` or ``on_abandoned``."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._enter(CircuitState.HALF_OPEN)
            self._probing = True
            log.info("circuit %s half-open: probing", self.model_id)
            return
        remaining = max(0.0, self._opened_at + self.reset_timeout_s - self._clock.now())
        if state is CircuitState.HALF_OPEN:
            detail = "a probe call is in flight"
        else:
            detail = f"calls are refused for another {remaining:.1f} s"
        raise CircuitOpenError(
            f"{self.model_id}: circuit open after {self._failures} consecutive failures; {detail}.",
            model_id=self.model_id,
            retry_after=remaining or None,
        )

    def on_success(self) -> None:
        if self._state is not CircuitState.CLOSED:
            log.info("circuit %s closed: the model answered", self.model_id)
            self._enter(CircuitState.CLOSED)
        self._failures = 0
        self._probing = False

    def on_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            if self._state is not CircuitState.OPEN or self._probing:
                log.warning("circuit %s open after %d consecutive failures", self.model_id, self._failures)
            self._enter(CircuitState.OPEN)
            self._opened_at = self._clock.now()
        self._probing = False

    def _enter(self, state: CircuitState) -> None:
        self._state = state
        metrics.breaker_changed(self.model_id, state.value)

    def on_abandoned(self) -> None:
        """The call was cancelled before a verdict: free the probe slot, judge nothing."""
        self._probing = False


class BreakerRegistry:
    """One breaker per model id, with shared settings: agent types that use the same
    model share its breaker, because they share its provider's health."""

    def __init__(
        self, *, failure_threshold: int = 5, reset_timeout_s: float = 30.0, clock: Clock | None = None
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_model(self, model_id: str) -> CircuitBreaker:
        breaker = self._breakers.get(model_id)
        if breaker is None:
            breaker = CircuitBreaker(
                model_id,
                failure_threshold=self.failure_threshold,
                reset_timeout_s=self.reset_timeout_s,
                clock=self._clock,
            )
            self._breakers[model_id] = breaker
        return breaker

    def states(self) -> dict[str, CircuitState]:
        return {model_id: breaker.state for model_id, breaker in self._breakers.items()}
