"""GuardedModel composes the controls; FallbackChain moves down to cheaper models and
finally to a minimum viable answer; ModelControls wires them from settings."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

import pydantic
import pytest

import agentstream.controls as controls
from agentstream.controls import (
    MINIMUM_VIABLE_MARKER,
    MINIMUM_VIABLE_MODEL_ID,
    CircuitState,
    ControlSettings,
    ControlStats,
    FallbackChain,
    FaultyModel,
    GuardedModel,
    ManualClock,
    ModelControls,
    ModelQuota,
    RateLimiter,
    RetryPolicy,
    collect_stats,
    is_minimum_viable,
)
from agentstream.models import Message, ModelResponse, ScriptedModel, ToolCall
from agentstream.models.errors import (
    BadRequestError,
    ContextTooLongError,
    ModelAuthError,
    ModelServerError,
    PermanentModelError,
    RateLimitedError,
)

CONVERSATION = [Message("system", "You are the billing support specialist."), Message("user", "Refund INV-1002")]
PRIMARY, CHEAP = "openai:gpt-4o", "openai:gpt-4o-mini"


def _model(model_id: str, *script: object) -> FaultyModel:
    return FaultyModel(ScriptedModel(model_id=model_id), list(script))  # type: ignore[arg-type]


def test_transient_errors_are_retried_and_counted() -> None:
    clock = ManualClock()
    model = _model(PRIMARY, RateLimitedError("HTTP 429", retry_after=2.0), ModelServerError("HTTP 500"))
    guarded = GuardedModel(model, clock=clock)

    async def scenario() -> int:
        with collect_stats() as run:
            await guarded.complete(CONVERSATION, [])
        return run.retries

    assert asyncio.run(scenario()) == 2
    assert guarded.stats.calls == 1 and guarded.stats.attempts == 3 and guarded.stats.retries == 2
    assert clock.slept[0] >= 2.0  # retry-after honoured
    assert model.calls == 3


def test_a_run_knows_whether_any_control_acted_counter_by_counter() -> None:
    stats = ControlStats()
    assert not stats.acted() and not any(stats.as_dict().values())
    for name in stats.as_dict():
        counted = ControlStats()
        counted.add(name)  # type: ignore[arg-type]
        assert counted.acted() and counted.as_dict()[name] == 1 and sum(counted.as_dict().values()) == 1


def test_a_hanging_call_times_out_and_is_retried() -> None:
    model = _model(PRIMARY, "hang")
    guarded = GuardedModel(model, timeout_s=0.01, clock=ManualClock())
    response = asyncio.run(guarded.complete(CONVERSATION, []))
    assert response.text and model.calls == 2 and guarded.stats.retries == 1


def test_an_auth_error_is_not_retried() -> None:
    model = _model(PRIMARY, ModelAuthError("HTTP 401"))
    with pytest.raises(ModelAuthError):
        asyncio.run(GuardedModel(model, clock=ManualClock()).complete(CONVERSATION, []))
    assert model.calls == 1


def test_every_attempt_takes_from_the_rate_limiter() -> None:
    clock = ManualClock()
    limiter = RateLimiter(ModelQuota(requests_per_minute=60), burst_s=1, clock=clock)
    model = _model(PRIMARY, ModelServerError("HTTP 500"), ModelServerError("HTTP 500"))
    policy = RetryPolicy(initial_backoff_s=0.0, max_backoff_s=0.0)
    guarded = GuardedModel(model, retry=policy, limiter=limiter, clock=clock)
    asyncio.run(guarded.complete(CONVERSATION, []))
    # Three attempts at 1 request/s with a burst of one: the limiter spaced them out.
    assert model.calls == 3 and clock.now() == pytest.approx(2.0)


def _chain(*models: FaultyModel, **kwargs: object) -> FallbackChain:
    clock = ManualClock()
    guarded = [GuardedModel(m, retry=RetryPolicy(max_attempts=2), clock=clock) for m in models]
    return FallbackChain(guarded, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "errors",
    [
        (ModelServerError("HTTP 500"), ModelServerError("HTTP 503")),  # retries spent
        (ModelAuthError("HTTP 401"),),
        (PermanentModelError("HTTP 429 insufficient_quota"),),
        (ContextTooLongError("context length exceeded"),),
    ],
    ids=["transient-exhausted", "auth", "quota-gone", "context-too-long"],
)
def test_the_chain_falls_back_to_the_cheaper_model(errors: tuple[Exception, ...]) -> None:
    primary, cheap = _model(PRIMARY, *errors), _model(CHEAP)
    chain = _chain(primary, cheap)

    async def scenario() -> tuple[ModelResponse, int]:
        with collect_stats() as run:
            response = await chain.complete(CONVERSATION, [])
        return response, run.fallbacks

    response, fallbacks = asyncio.run(scenario())
    assert response.model == CHEAP and not is_minimum_viable(response)
    assert fallbacks == 1 and chain.stats.fallbacks == 1
    assert chain.model_id == PRIMARY


def test_an_open_circuit_falls_back_without_calling_the_primary() -> None:
    controls_ = ModelControls(
        ControlSettings.model_validate({"breaker": {"failure_threshold": 1}}), clock=ManualClock()
    )
    primary, cheap = _model(PRIMARY, ModelAuthError("HTTP 401")), _model(CHEAP)
    chain = FallbackChain([controls_.guard(primary), controls_.guard(cheap)])
    for _ in range(3):
        assert asyncio.run(chain.complete(CONVERSATION, [])).model == CHEAP
    assert primary.calls == 1  # later calls were refused by its open breaker
    assert controls_.breakers.states()[PRIMARY] is CircuitState.OPEN
    assert chain.stats.fallbacks == 3


def test_a_bad_request_is_not_hidden_behind_a_fallback() -> None:
    primary, cheap = _model(PRIMARY, BadRequestError("HTTP 400: invalid tool schema")), _model(CHEAP)
    with pytest.raises(BadRequestError):
        asyncio.run(_chain(primary, cheap).complete(CONVERSATION, []))
    assert cheap.calls == 0


def test_when_every_model_fails_the_user_gets_a_minimum_viable_answer() -> None:
    down = [ModelServerError("HTTP 500")] * 2
    primary, cheap = _model(PRIMARY, *down), _model(CHEAP, ModelAuthError("HTTP 401"))
    conversation = [
        *CONVERSATION,
        Message("assistant", None, tool_calls=(ToolCall("c0", "lookup_invoice", {"invoice_id": "INV-1002"}),)),
        Message("tool", '{"id": "INV-1002", "status": "paid"}', tool_call_id="c0", name="lookup_invoice"),
    ]
    chain = _chain(primary, cheap)
    response = asyncio.run(chain.complete(conversation, []))
    assert is_minimum_viable(response) and response.model == MINIMUM_VIABLE_MODEL_ID
    assert response.tool_calls == () and response.usage.input_tokens == 0
    text = response.text or ""
    assert text.startswith(MINIMUM_VIABLE_MARKER) and "could not complete your request" in text
    assert 'Your request: "Refund INV-1002"' in text
    assert '- lookup_invoice: {"id": "INV-1002", "status": "paid"}' in text
    assert f"{PRIMARY}: ModelServerError; {CHEAP}: ModelAuthError" in text
    assert chain.stats.minimum_viable == 1


def test_without_a_minimum_viable_answer_the_last_error_propagates() -> None:
    chain = _chain(_model(PRIMARY, ModelAuthError("a")), _model(CHEAP, ModelAuthError("b")), minimum_viable_answer=None)
    with pytest.raises(ModelAuthError, match="b"):
        asyncio.run(chain.complete(CONVERSATION, []))


def test_controls_share_state_per_model_id_and_take_their_group_share(tmp_path: Path) -> None:
    settings = ControlSettings.model_validate(
        {"quotas": {PRIMARY: {"requests_per_minute": 600}}, "cache": {"path": str(tmp_path / "cache")}}
    )
    plane = ModelControls(settings, clock=ManualClock())
    first, second = plane.guard(ScriptedModel(model_id=PRIMARY)), plane.guard(ScriptedModel(model_id=PRIMARY))
    assert first.breaker is second.breaker and first.limiter is second.limiter and first.cache is second.cache
    assert plane.guard(ScriptedModel()).limiter is None  # no quota configured
    plane.set_members(3)
    assert first.limiter is not None and first.limiter.effective.requests_per_minute == 200
    plane.close()


def test_settings_reject_unknown_keys_by_name() -> None:
    with pytest.raises(pydantic.ValidationError, match="failure_treshold"):
        ControlSettings.model_validate({"breaker": {"failure_treshold": 3}})


def test_the_package_exports_exactly_its_public_names() -> None:
    public = {
        name
        for name in dir(controls)
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(getattr(controls, name), types.ModuleType)
    }
    assert public == set(controls.__all__)
