"""A specialist's model chain guards each model exactly once: one call takes one
rate-limit token, retries are not multiplied, the breaker closes again after an outage,
and the response cache follows the configured temperature."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agentstream.controls import (
    CircuitState,
    ControlSettings,
    FaultyModel,
    ManualClock,
    ModelControls,
    is_minimum_viable,
)
from agentstream.errors import ConfigurationError
from agentstream.models import Message, ScriptedModel
from agentstream.models.config import ModelSettings
from agentstream.models.errors import ModelServerError
from agentstream.settings import MODEL_ENV
from agentstream.specialist.model_chains import ModelChains

CONVERSATION = [Message("system", "You are the billing support specialist."), Message("user", "Refund INV-1002")]
MODEL_ID = "scripted:default"
FAST_RETRIES = {"max_attempts": 3, "initial_backoff_s": 0.1, "max_backoff_s": 0.1}


def _chains(model: FaultyModel, controls: dict[str, Any], temperature: float | None = None) -> tuple[ModelChains, ManualClock]:
    clock = ManualClock()
    plane = ModelControls(ControlSettings.model_validate(controls), clock=clock)
    return ModelChains(ModelSettings(temperature=temperature), plane, fixed=model), clock


def _down(calls: int) -> FaultyModel:
    """A model whose first ``calls`` calls fail with HTTP 500; later ones answer."""
    return FaultyModel(ScriptedModel(), [ModelServerError("HTTP 500")] * calls)


def _ask(chains: ModelChains) -> Any:
    return asyncio.run(chains.for_tier("standard").complete(CONVERSATION, []))


def test_one_call_takes_one_rate_limit_token() -> None:
    # 6 requests a minute with a 10 s burst: the bucket holds exactly one request.
    chains, clock = _chains(FaultyModel(), {"quotas": {MODEL_ID: {"requests_per_minute": 6}}, "burst_s": 10})
    _ask(chains)
    assert clock.slept == []  # the one token was there; a second guard would have waited 10 s
    _ask(chains)
    assert clock.slept == [pytest.approx(10.0)]  # the next call waits for the bucket to refill


def test_retries_are_not_multiplied() -> None:
    model = _down(calls=100)
    chains, _ = _chains(model, {"retry": FAST_RETRIES})
    assert is_minimum_viable(_ask(chains))
    assert model.calls == 3  # max_attempts, not max_attempts squared


def test_the_breaker_closes_once_the_model_answers_again() -> None:
    model = _down(calls=3)  # one call's whole retry budget
    chains, clock = _chains(model, {"retry": FAST_RETRIES, "breaker": {"failure_threshold": 1, "reset_timeout_s": 30}})
    breaker = chains.controls.breakers.for_model(MODEL_ID)
    assert is_minimum_viable(_ask(chains)) and breaker.state is CircuitState.OPEN
    assert is_minimum_viable(_ask(chains)) and model.calls == 3  # refused while open
    clock.advance(30)
    answer = _ask(chains)  # the half-open probe reaches the model, which has recovered
    assert not is_minimum_viable(answer) and answer.model == MODEL_ID
    assert breaker.state is CircuitState.CLOSED
    assert not is_minimum_viable(_ask(chains))


@pytest.mark.parametrize(("temperature", "calls"), [(0.0, 1), (0.7, 2)])
def test_the_cache_follows_the_configured_temperature(tmp_path: Path, temperature: float, calls: int) -> None:
    model = FaultyModel()
    chains, _ = _chains(model, {"cache": {"path": str(tmp_path / "cache")}}, temperature=temperature)
    _ask(chains)
    _ask(chains)
    chains.controls.close()
    assert model.calls == calls  # a sampled reply (temperature > 0) is never replayed from the cache


def test_chain_refuses_models_guarded_already() -> None:
    plane = ModelControls(ControlSettings(), clock=ManualClock())
    with pytest.raises(ConfigurationError, match=r"guarded already.*pass the bare models"):
        plane.chain([plane.guard(ScriptedModel())])


def test_each_tier_gets_its_model_and_any_other_text_the_default_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV, raising=False)
    settings = ModelSettings(models={"simple": "scripted:small", "standard": "scripted:default", "complex": "scripted:big"})
    chains = ModelChains(settings, ModelControls(ControlSettings()))
    asked = ["simple", "complex", None, "standard", *(f"tier-{i}" for i in range(50)), "simple"]
    assert [chains.model_id(tier) for tier in asked] == [
        "scripted:small", "scripted:big", "scripted:default", "scripted:default", *["scripted:default"] * 50, "scripted:small"]
    assert len(chains._ids) <= 4  # the tiers and the default: a sender's text is no key
