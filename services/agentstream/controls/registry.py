"""The controls of one worker process: shared per model id, built once at start-up.

Breakers and rate limiters belong to a model id, not to an agent type: two agent types
calling the same model share its provider's health and its quota. ``ModelControls`` hands
out ``GuardedModel``s and ``FallbackChain``s wired to those shared pieces, and is what
the worker's rebalance callback tells about its share of the group (``set_members``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentstream.controls.breaker import BreakerRegistry
from agentstream.controls.cache import ResponseCache
from agentstream.controls.clock import Clock, SystemClock
from agentstream.controls.fallback import (
    FallbackChain,
    MinimumViableAnswer,
    default_minimum_viable_answer,
)
from agentstream.controls.guarded import GuardedModel
from agentstream.controls.rate_limit import RateLimiters
from agentstream.controls.settings import ControlSettings
from agentstream.errors import ConfigurationError
from agentstream.models.base import Model


class ModelControls:
    """Factory and owner of the per-model controls; ``close`` releases the cache."""

    def __init__(self, settings: ControlSettings | None = None, *, clock: Clock | None = None, agent: str = "") -> None:
        self.settings = settings or ControlSettings()
        self.agent = agent  # the agent type whose calls these are (the metrics' ``agent`` label)
        self._clock = clock or SystemClock()
        self.breakers = BreakerRegistry(
            failure_threshold=self.settings.breaker.failure_threshold,
            reset_timeout_s=self.settings.breaker.reset_timeout_s,
            clock=self._clock,
        )
        self.limiters = RateLimiters(
            {model_id: quota.quota() for model_id, quota in self.settings.quotas.items()},
            burst_s=self.settings.burst_s,
            clock=self._clock,
        )
        # Opened lazily: building the controls must not touch the disk (tests, `--help`).
        self._cache_path = self.settings.cache.path
        self._cache: ResponseCache | None = None

    @property
    def cache(self) -> ResponseCache | None:
        if self._cache is None and self._cache_path is not None:
            self._cache = ResponseCache(self._cache_path, ttl_s=self.settings.cache.ttl_s)
        return self._cache

    def guard(
        self,
        model: Model,
        *,
        temperature: float | None = None,
        deterministic: bool = True,
        params: Mapping[str, Any] | None = None,
    ) -> GuardedModel:
        return GuardedModel(
            model,
            retry=self.settings.retry.policy(),
            timeout_s=self.settings.timeout_s,
            breaker=self.breakers.for_model(model.model_id),
            limiter=self.limiters.for_model(model.model_id),
            cache=self.cache,
            temperature=temperature,
            deterministic=deterministic,
            params=params,
            clock=self._clock,
            agent=self.agent,
        )

    def chain(
        self,
        models: Sequence[Model],
        minimum_viable_answer: MinimumViableAnswer | None = default_minimum_viable_answer,
        *,
        temperature: float | None = None,
        deterministic: bool = True,
    ) -> FallbackChain:
        """A fallback chain over the bare ``models``, each guarded here, once.

        A model guarded already would sit behind its own breaker and limiter twice (retries
        multiplied, two rate-limit tokens per call, a half-open probe the inner guard
        refuses), so one is refused with ``ConfigurationError``.
        """
        guarded = [model.model_id for model in models if isinstance(model, GuardedModel)]
        if guarded:
            raise ConfigurationError(
                f"Cannot chain {guarded}: they are guarded already, and chain() guards every model itself; "
                "pass the bare models."
            )
        return FallbackChain(
            [self.guard(model, temperature=temperature, deterministic=deterministic) for model in models],
            minimum_viable_answer,
        )

    def set_members(self, members: float) -> None:
        """This member's share of every model quota changed (call on rebalance)."""
        self.limiters.set_members(members)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
