"""Controls around every model call: retries, timeout, circuit breaker, rate limits,
response cache, fallback chain — the counters of what they did, and ``FaultyModel`` to
show them at work.

Compose them with ``GuardedModel`` (one model) and ``FallbackChain`` (several), or let
``ModelControls`` build both from ``ControlSettings`` with per-model shared state.
"""

from __future__ import annotations

from agentstream.controls.breaker import BreakerRegistry, CircuitBreaker, CircuitState
from agentstream.controls.cache import ResponseCache, cache_allowed, cache_key
from agentstream.controls.clock import Clock, ManualClock, SystemClock
from agentstream.controls.errors import CircuitOpenError
from agentstream.controls.fallback import (
    MINIMUM_VIABLE_MARKER,
    MINIMUM_VIABLE_MODEL_ID,
    FallbackChain,
    MinimumViableAnswer,
    ModelFailure,
    default_minimum_viable_answer,
    is_minimum_viable,
    should_fall_back,
)
from agentstream.controls.faults import HANG, FaultyModel
from agentstream.controls.guarded import GuardedModel, estimate_prompt_tokens
from agentstream.controls.rate_limit import (
    ModelQuota,
    RateLimiter,
    RateLimiters,
    effective_quota,
    members_from_assignment,
)
from agentstream.controls.registry import ModelControls
from agentstream.controls.retry import RetryPolicy, call_with_retry
from agentstream.controls.settings import (
    BreakerSettings,
    CacheSettings,
    ControlSettings,
    QuotaSettings,
    RetrySettings,
)
from agentstream.controls.stats import ControlStats, collect_stats
from agentstream.controls.timeout import call_with_timeout

__all__ = [
    "HANG",
    "MINIMUM_VIABLE_MARKER",
    "MINIMUM_VIABLE_MODEL_ID",
    "BreakerRegistry",
    "BreakerSettings",
    "CacheSettings",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ControlSettings",
    "ControlStats",
    "FallbackChain",
    "FaultyModel",
    "GuardedModel",
    "ManualClock",
    "MinimumViableAnswer",
    "ModelControls",
    "ModelFailure",
    "ModelQuota",
    "QuotaSettings",
    "RateLimiter",
    "RateLimiters",
    "ResponseCache",
    "RetryPolicy",
    "RetrySettings",
    "SystemClock",
    "cache_allowed",
    "cache_key",
    "call_with_retry",
    "call_with_timeout",
    "collect_stats",
    "default_minimum_viable_answer",
    "effective_quota",
    "estimate_prompt_tokens",
    "is_minimum_viable",
    "members_from_assignment",
    "should_fall_back",
]
