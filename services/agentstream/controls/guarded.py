"""``GuardedModel``: one model behind every per-call control, in a fixed order.

    cache → circuit breaker → retry( rate limiter → timeout( provider call ) )

- The cache comes first: a hit must cost neither quota nor a breaker probe.
- The breaker is outside the retries: one breaker failure is a call whose retry budget
  was spent, and an open breaker refuses before any waiting starts.
- The rate limiter is inside the retries, so every attempt — a retry after a 429 above
  all — takes its request and tokens from the bucket; a limiter outside would let
  retries hammer a provider that is already refusing us.
- The timeout wraps only the provider call: waiting for the bucket is not the
  provider's slowness.

It is itself a ``Model``, so the agent loop, the fallback chain and the history
compressor use it like any other.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from agentstream import metrics
from agentstream.controls.breaker import CircuitBreaker
from agentstream.controls.cache import ResponseCache, cache_allowed, cache_key
from agentstream.controls.clock import Clock, SystemClock
from agentstream.controls.errors import CircuitOpenError
from agentstream.controls.rate_limit import RateLimiter
from agentstream.controls.retry import Retrier, RetryPolicy
from agentstream.controls.stats import ControlStats, record
from agentstream.controls.timeout import call_with_timeout
from agentstream.models.base import Message, Model, ModelResponse, Usage
from agentstream.models.errors import BadRequestError
from agentstream.telemetry import tracing

# Reserved for the reply when reserving tokens before a call; settled with real usage.
DEFAULT_EXPECTED_OUTPUT_TOKENS = 256

_ZERO = Usage(0, 0, 0.0)


def estimate_prompt_tokens(messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> int:
    """About four characters per token, plus a few per message for the role framing."""
    chars = len(json.dumps(list(tools), default=str)) if tools else 0
    for message in messages:
        chars += len(message.content or "") + 16
        chars += sum(len(call.name) + len(json.dumps(call.arguments, default=str)) for call in message.tool_calls)
    return chars // 4


def counts_against_breaker(exc: BaseException) -> bool:
    """Whether a failure says the model is unhealthy.

    A bad request (context too long included) is the provider answering properly about
    our request: the model is reachable, so it does not count. Transient errors, auth
    failures and anything unexpected do.
    """
    return not isinstance(exc, BadRequestError)


class GuardedModel:
    """``model`` with retries, a per-call timeout, and optionally breaker, limiter, cache.

    ``temperature``/``deterministic`` only decide whether the cache may be used (see
    ``cache_allowed``); the provider itself is configured elsewhere. ``params`` go into
    the cache key, so two configurations of one model id never share entries.
    """

    def __init__(
        self,
        model: Model,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = 60.0,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        cache: ResponseCache | None = None,
        temperature: float | None = None,
        deterministic: bool = True,
        params: Mapping[str, Any] | None = None,
        expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT_TOKENS,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        agent: str = "",
    ) -> None:
        self.model = model
        self.agent = agent  # the agent type calling, for the metrics' ``agent`` label
        self.model_id = model.model_id
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.breaker = breaker
        self.limiter = limiter
        self.cache = cache if cache_allowed(temperature, deterministic) else None
        self.params = {"temperature": temperature, **(params or {})}
        self.expected_output_tokens = expected_output_tokens
        self.stats = ControlStats()
        self._clock = clock or SystemClock()
        self._retrier = Retrier(self.retry, sleep=self._clock.sleep, rng=rng, on_retry=self._on_retry)

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        # The span `chat {model}` and the metrics of one call, retries inside both.
        with tracing.model_call(self.model_id) as span, metrics.model_call(self.agent, self.model_id) as call:
            response = await self._complete(messages, tools, call)
            span.replied(response.model, response.usage.input_tokens, response.usage.output_tokens)
        return response

    async def _complete(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], call: dict[str, str]
    ) -> ModelResponse:
        record(self.stats, "calls")
        if self.cache is None:
            return await self._call_through_breaker(messages, tools)
        key = cache_key(self.model_id, messages, tools, self.params)
        cached = self.cache.get(key)
        if cached is not None:
            record(self.stats, "cache_hits")
            call["outcome"] = metrics.CACHE_HIT
            # A hit spent nothing: report zero usage so budgets and costs stay true.
            return replace(cached, usage=_ZERO)
        record(self.stats, "cache_misses")
        response = await self._call_through_breaker(messages, tools)
        # An empty reply is the model misbehaving; replaying it for a whole TTL would not help.
        if (response.text or "").strip() or response.tool_calls:
            self.cache.put(key, response)
        return response

    async def _call_through_breaker(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelResponse:
        if self.breaker is not None:
            try:
                self.breaker.before_call()
            except CircuitOpenError:
                record(self.stats, "circuit_rejections")
                raise
        try:
            response = await self._retrier.call(lambda: self._attempt(messages, tools))
        except Exception as exc:
            if self.breaker is not None:
                if counts_against_breaker(exc):
                    self.breaker.on_failure()
                else:
                    self.breaker.on_success()
            raise
        except BaseException:  # cancelled: no verdict on the model's health
            if self.breaker is not None:
                self.breaker.on_abandoned()
            raise
        if self.breaker is not None:
            self.breaker.on_success()
        return response

    def _on_retry(self, error: BaseException, _wait: float) -> None:
        record(self.stats, "retries")
        metrics.model_retry(self.agent, self.model_id, error)

    async def _attempt(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> ModelResponse:
        reserved = 0
        if self.limiter is not None:
            reserved = estimate_prompt_tokens(messages, tools) + self.expected_output_tokens
            waiting_since = self._clock.now()
            await self.limiter.acquire(reserved)
            metrics.rate_limit_waited(self.agent, self.model_id, self._clock.now() - waiting_since)
        record(self.stats, "attempts")
        response = await call_with_timeout(lambda: self.model.complete(messages, tools), self.timeout_s, self.model_id)
        usage = response.usage
        metrics.tokens_used(self.agent, self.model_id, usage.input_tokens, usage.output_tokens, usage.cost_usd)
        if self.limiter is not None:
            self.limiter.settle(reserved, response.usage.input_tokens + response.usage.output_tokens)
        return response
