"""Typed settings of the model-call controls; unknown keys are an error, not ignored."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agentstream.controls.rate_limit import DEFAULT_BURST_S, ModelQuota
from agentstream.controls.retry import RetryPolicy

_STRICT = ConfigDict(frozen=True, extra="forbid")


class RetrySettings(BaseModel):
    model_config = _STRICT

    max_attempts: int = Field(default=4, ge=1)
    initial_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=20.0, ge=0)
    max_retry_after_s: float = Field(default=60.0, ge=0)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.initial_backoff_s, self.max_backoff_s, self.max_retry_after_s)


class BreakerSettings(BaseModel):
    model_config = _STRICT

    failure_threshold: int = Field(default=5, ge=1)
    reset_timeout_s: float = Field(default=30.0, ge=0)


class QuotaSettings(BaseModel):
    """A model's quota for the whole consumer group (each member takes its share)."""

    model_config = _STRICT

    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)

    def quota(self) -> ModelQuota:
        return ModelQuota(self.requests_per_minute, self.tokens_per_minute)


class CacheSettings(BaseModel):
    """The response cache is off unless a directory is given (it is per worker process)."""

    model_config = _STRICT

    path: Path | None = None
    ttl_s: float = Field(default=3600.0, gt=0)


class ControlSettings(BaseModel):
    """Everything around a model call. ``quotas`` are keyed by model id (``provider:model``)."""

    model_config = _STRICT

    timeout_s: float | None = Field(default=60.0, gt=0)
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    quotas: dict[str, QuotaSettings] = Field(default_factory=dict)
    burst_s: float = Field(default=DEFAULT_BURST_S, gt=0)
    cache: CacheSettings = CacheSettings()
