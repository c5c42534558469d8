"""The metric families (agentstream/metrics.py) and their instrumentation points, read
back from prometheus-client's default registry."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agentstream import metrics
from agentstream.controls import CircuitBreaker, GuardedModel, ManualClock, ModelQuota, RateLimiter, RetryPolicy
from agentstream.controls.faults import FaultyModel
from agentstream.models import Message, ModelResponse, ScriptedModel, ToolCall, Usage
from agentstream.models.errors import ModelAuthError, ModelServerError, RateLimitedError
from agentstream.specialist import run_agent
from tests import support_desk

CONVERSATION = [Message("system", "You are the billing support specialist."), Message("user", "Refund INV-1002")]


def test_counters_are_created_once_and_count_per_label() -> None:
    assert metrics.retries() is metrics.retries()
    before = REGISTRY.get_sample_value("agentstream_dead_letters_total", {"stage": "router", "error_class": "PERMANENT"}) or 0
    metrics.dead_letters().labels("router", "PERMANENT").inc()
    after = REGISTRY.get_sample_value("agentstream_dead_letters_total", {"stage": "router", "error_class": "PERMANENT"})
    assert after == before + 1


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _agent() -> str:
    """A label value of this test alone: the registry is the process's, shared by all tests."""
    return f"agent-{uuid.uuid4().hex[:8]}"


def test_register_all_lists_every_family_before_any_event() -> None:
    metrics.register_all()
    names = {family.name for family in REGISTRY.collect()}
    expected = {
        "agentstream_task_results", "agentstream_task_duration_seconds", "agentstream_task_cost_usd",
        "agentstream_tenant_cost_usd", "agentstream_stage_duration_seconds", "agentstream_agent_steps",
        "agentstream_inflight_loops", "agentstream_tool_calls", "agentstream_model_calls",
        "agentstream_gen_ai_client_operation_duration_seconds", "agentstream_gen_ai_client_token_usage", "agentstream_model_cost_usd",
        "agentstream_model_retries", "agentstream_circuit_breaker_state", "agentstream_rate_limit_wait_seconds",
        "agentstream_checkpoint_seconds", "agentstream_offset_commit_seconds", "agentstream_idle_partitions", "agentstream_acked_write_seconds", "agentstream_event_loop_lag_seconds",
    }
    assert expected <= names, sorted(expected - names)


class _Priced:
    """A model whose every answer costs ``USD`` (the scripted model charges nothing)."""

    USD = 0.0025

    def __init__(self, inner: ScriptedModel) -> None:
        self.inner, self.model_id = inner, inner.model_id

    async def complete(self, messages: Any, tools: Any) -> ModelResponse:
        response = await self.inner.complete(messages, tools)
        return dataclasses.replace(response, usage=dataclasses.replace(response.usage, cost_usd=self.USD))


def test_a_guarded_call_counts_its_outcome_retries_duration_and_tokens() -> None:
    agent, model_id = _agent(), "openai:gpt-4o"
    model = FaultyModel(_Priced(ScriptedModel(model_id=model_id)), [RateLimitedError("HTTP 429"), ModelServerError("HTTP 500")])
    guarded = GuardedModel(model, clock=ManualClock(), agent=agent)
    response = asyncio.run(guarded.complete(CONVERSATION, []))
    labels = {"agent": agent, "model": model_id}
    assert _value("agentstream_model_calls_total", **labels, outcome="ok") == 1
    assert _value("agentstream_model_retries_total", **labels, error_class="RateLimitedError") == 1
    assert _value("agentstream_model_retries_total", **labels, error_class="ModelServerError") == 1
    assert _value("agentstream_gen_ai_client_operation_duration_seconds_count", **labels, outcome="ok") == 1
    # Only the attempt that answered used tokens; the histogram's sum is the call's usage.
    assert _value("agentstream_gen_ai_client_token_usage_sum", **labels, type="input") == response.usage.input_tokens > 0
    assert _value("agentstream_gen_ai_client_token_usage_sum", **labels, type="output") == response.usage.output_tokens
    assert _value("agentstream_gen_ai_client_token_usage_count", **labels, type="input") == 1
    assert _value("agentstream_model_cost_usd_total", **labels) == pytest.approx(_Priced.USD) == response.usage.cost_usd


def test_kept_series_are_the_exported_ones_per_label_values() -> None:
    """The per-call series are looked up once per label values and kept: repeated calls
    add to the series a scrape reads, and other label values get series of their own."""
    first, second, model_id = _agent(), _agent(), "openai:gpt-4o-mini"
    for _ in range(3):
        metrics.tokens_used(first, model_id, 10, 2, 0.5)
        metrics.tool_call(first, "search_kb", True, True)
        with metrics.model_call(first, model_id):
            pass
    metrics.tokens_used(second, model_id, 7, 1, 0.25)
    metrics.tool_call(first, "search_kb", True, False)
    assert _value("agentstream_gen_ai_client_token_usage_sum", agent=first, model=model_id, type="input") == 30
    assert _value("agentstream_gen_ai_client_token_usage_sum", agent=first, model=model_id, type="output") == 6
    assert _value("agentstream_model_cost_usd_total", agent=first, model=model_id) == pytest.approx(1.5)
    assert _value("agentstream_gen_ai_client_token_usage_sum", agent=second, model=model_id, type="input") == 7
    assert _value("agentstream_model_cost_usd_total", agent=second, model=model_id) == pytest.approx(0.25)
    assert _value("agentstream_tool_calls_total", agent=first, tool="search_kb", outcome="ok") == 3
    assert _value("agentstream_tool_calls_total", agent=first, tool="search_kb", outcome="error") == 1
    assert _value("agentstream_model_calls_total", agent=first, model=model_id, outcome="ok") == 3
    assert _value("agentstream_gen_ai_client_operation_duration_seconds_count", agent=first, model=model_id, outcome="ok") == 3


def test_a_failed_call_counts_under_its_error_class() -> None:
    agent, model_id = _agent(), "openai:gpt-4o"
    guarded = GuardedModel(FaultyModel(ScriptedModel(model_id=model_id), [ModelAuthError("HTTP 401")]),
                           clock=ManualClock(), agent=agent)
    with pytest.raises(ModelAuthError):
        asyncio.run(guarded.complete(CONVERSATION, []))
    assert _value("agentstream_model_calls_total", agent=agent, model=model_id, outcome="ModelAuthError") == 1
    assert _value("agentstream_model_calls_total", agent=agent, model=model_id, outcome="ok") == 0
    assert _value("agentstream_gen_ai_client_token_usage_count", agent=agent, model=model_id, type="input") == 0


def test_a_cancelled_call_counts_as_cancelled_and_its_block_is_one_per_call() -> None:
    agent, model_id = _agent(), "openai:gpt-4o"

    async def drained() -> None:
        with metrics.model_call(agent, model_id):
            raise asyncio.CancelledError("worker draining")

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(drained())
    with metrics.model_call(agent, model_id) as seen, metrics.model_call(agent, model_id) as other:
        assert seen is not other, "each call sets its own outcome"
        seen["outcome"] = metrics.CACHE_HIT
    assert _value("agentstream_model_calls_total", agent=agent, model=model_id, outcome="CancelledError") == 1
    assert _value("agentstream_model_calls_total", agent=agent, model=model_id, outcome=metrics.CACHE_HIT) == 1
    assert _value("agentstream_model_calls_total", agent=agent, model=model_id, outcome="ok") == 1
    assert _value("agentstream_gen_ai_client_operation_duration_seconds_count", agent=agent, model=model_id,
                  outcome="CancelledError") == 1


def test_rate_limit_waits_are_observed_per_attempt() -> None:
    agent, model_id, clock = _agent(), "openai:gpt-4o-mini", ManualClock()
    limiter = RateLimiter(ModelQuota(requests_per_minute=60), burst_s=1, clock=clock)
    model = FaultyModel(ScriptedModel(model_id=model_id), [ModelServerError("HTTP 500"), ModelServerError("HTTP 500")])
    policy = RetryPolicy(initial_backoff_s=0.0, max_backoff_s=0.0)
    asyncio.run(GuardedModel(model, retry=policy, limiter=limiter, clock=clock, agent=agent).complete(CONVERSATION, []))
    # Three attempts at one request a second, burst one: waits of 0, 1 and 1 s.
    assert _value("agentstream_rate_limit_wait_seconds_count", agent=agent, model=model_id) == 3
    assert _value("agentstream_rate_limit_wait_seconds_sum", agent=agent, model=model_id) == pytest.approx(2.0)


def test_the_breaker_gauge_follows_the_breaker_state() -> None:
    model_id, clock = f"test:{uuid.uuid4().hex[:8]}", ManualClock()
    breaker = CircuitBreaker(model_id, failure_threshold=1, reset_timeout_s=5, clock=clock)
    assert _value("agentstream_circuit_breaker_state", model=model_id) == metrics.BREAKER_STATES["closed"]
    breaker.before_call()
    breaker.on_failure()
    assert _value("agentstream_circuit_breaker_state", model=model_id) == metrics.BREAKER_STATES["open"]
    asyncio.run(clock.sleep(5))
    breaker.before_call()  # the probe
    assert _value("agentstream_circuit_breaker_state", model=model_id) == metrics.BREAKER_STATES["half_open"]
    breaker.on_success()
    assert _value("agentstream_circuit_breaker_state", model=model_id) == metrics.BREAKER_STATES["closed"]


class _Replay:
    model_id = "test:replay"

    def __init__(self, *responses: ModelResponse) -> None:
        self.responses = list(responses)

    async def complete(self, messages: object, tools: object) -> ModelResponse:
        return self.responses.pop(0)


def test_tool_calls_count_by_tool_and_outcome_and_a_made_up_tool_is_no_label() -> None:
    agent = _agent()
    calls = (ToolCall("c0", "refund_everything", {}), ToolCall("c1", "search_kb", {"query": "refund"}),
             ToolCall("c2", "search_kb", {"wrong": 1}))
    model = _Replay(ModelResponse(None, calls, Usage(10, 5), "test:replay"), ModelResponse("Done.", (), Usage(1, 1), "test:replay"))
    task = {"task_id": "t-1", "session_id": "s-1", "input": "refund"}
    asyncio.run(run_agent(task, agent, model, support_desk.registry(), ["search_kb"]))
    assert _value("agentstream_tool_calls_total", agent=agent, tool=metrics.NOT_ALLOWED, outcome="refused") == 1
    assert _value("agentstream_tool_calls_total", agent=agent, tool="search_kb", outcome="ok") == 1
    assert _value("agentstream_tool_calls_total", agent=agent, tool="search_kb", outcome="error") == 1
    assert _value("agentstream_tool_calls_total", agent=agent, tool="refund_everything", outcome="refused") == 0


def test_a_published_result_counts_its_status_latency_and_cost() -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    stage = _agent()
    result = {"task_id": "t", "status": "COMPLETED", "tenant_id": tenant, "submitted_at": 10_000,
              "completed_at": 12_500, "usage": {"cost_usd": 0.25}}
    duration_before = _value("agentstream_task_duration_seconds_sum", status="COMPLETED")
    count_before = _value("agentstream_task_duration_seconds_count", status="COMPLETED")
    metrics.task_result(stage, result)
    assert _value("agentstream_task_results_total", stage=stage, status="COMPLETED", tenant=tenant) == 1
    assert _value("agentstream_task_duration_seconds_sum", status="COMPLETED") == pytest.approx(duration_before + 2.5)
    assert _value("agentstream_task_duration_seconds_count", status="COMPLETED") == count_before + 1
    assert _value("agentstream_tenant_cost_usd_total", tenant=tenant) == pytest.approx(0.25)


def test_a_specialist_run_counts_its_steps_and_stage_latency() -> None:
    agent = _agent()
    result = {"agent_type": agent, "status": "COMPLETED", "behavior_version": "v1", "started_at": 1_000,
              "finished_at": 1_750}
    metrics.specialist_run(result, 3)
    assert _value("agentstream_agent_steps_sum", agent=agent, status="COMPLETED", behavior_version="v1") == 3
    assert _value("agentstream_agent_steps_bucket", agent=agent, status="COMPLETED", behavior_version="v1", le="2.0") == 0
    assert _value("agentstream_stage_duration_seconds_sum", stage=agent, status="COMPLETED") == pytest.approx(0.75)
    assert _value("agentstream_specialist_runs_total", agent=agent, variant="live", behavior_version="v1",
                  status="COMPLETED") == 1
    metrics.specialist_run({**result, "variant": "candidate", "behavior_version": "v2"}, 2)
    assert _value("agentstream_specialist_runs_total", agent=agent, variant="candidate", behavior_version="v2",
                  status="COMPLETED") == 1


def test_the_inflight_gauge_counts_running_loops_only() -> None:
    agent = _agent()
    with metrics.loop_running(agent), metrics.loop_running(agent):
        assert _value("agentstream_inflight_loops", agent=agent) == 2
    assert _value("agentstream_inflight_loops", agent=agent) == 0
