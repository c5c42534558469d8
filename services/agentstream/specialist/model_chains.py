"""The model a specialist calls for a task: its tier's model, then the fallbacks, then the
minimum viable answer, every model behind the per-call controls exactly once.

Guarding a model twice shares its breaker and limiter between two wrappers: retries
multiply, each call takes two rate-limit tokens, and at half-open the outer wrapper
takes the probe slot so the inner one is refused and the breaker never closes again.
``ModelControls.chain`` guards the bare models itself and refuses guarded ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agentstream.controls.faults import FaultyModel
from agentstream.controls.registry import ModelControls
from agentstream.models.base import Model
from agentstream.models.call_log import CallLogModel, MarkedFailures
from agentstream.models.config import ModelSettings
from agentstream.models.registry import create_model
from agentstream.models.scripted import ScriptedModel
from agentstream.models.scripted_rules import ScriptedRule
from agentstream.settings import (
    SCRIPTED_CALL_LOG_ENV,
    SCRIPTED_FAILURE_RATE_ENV,
    SCRIPTED_FAULTS_ENV,
    SCRIPTED_LATENCY_ENV,
)
from agentstream.tier import Tier, as_tier


class ModelChains:
    """The guarded model chain (tier model → fallbacks → minimum viable answer) per tier,
    built on first use and kept: the chains of one worker share their controls."""

    def __init__(self, settings: ModelSettings, controls: ModelControls, fixed: Model | None = None) -> None:
        self.settings = settings
        self.controls = controls
        self.fixed = fixed  # tests inject one model for every tier
        self._chains: dict[str, Model] = {}
        # Per tier (None: the default's), resolved once: model_for reads the environment
        # and parses the id, and a task asks several times (its RUNNING event, its chain).
        self._ids: dict[Tier | None, str] = {}

    def model_id(self, tier: str | None) -> str:
        """The model of ``tier``; an unknown tier gets the default tier's."""
        if self.fixed is not None:
            return self.fixed.model_id
        known = as_tier(tier)  # a key from the tiers only: a task's tier is its sender's text
        model_id = self._ids.get(known)
        if model_id is None:
            model_id = self._ids[known] = self.settings.model_for(known)
        return model_id

    def model_ids(self) -> list[str]:
        if self.fixed is not None:
            return [self.fixed.model_id]
        return sorted({self.settings.model_for(t) for t in self.settings.models} | set(self.settings.fallbacks))

    def for_tier(self, tier: str | None) -> Model:
        key = self.model_id(tier)
        if key not in self._chains:
            if self.fixed is not None:
                bare: list[Model] = [self.fixed]
            else:
                bare = [_base_model(model_id, self.settings) for model_id in [key, *self.settings.fallbacks]]
            self._chains[key] = self.controls.chain(bare, temperature=self.settings.temperature)
        return self._chains[key]


def _base_model(model_id: str, settings: ModelSettings) -> Model:
    if model_id.startswith("scripted:"):
        return scripted_model_from_env(settings.scripted)
    return create_model(model_id, settings)


def scripted_model_from_env(rules: Sequence[ScriptedRule] = ()) -> Model:
    """The ScriptedModel with the agent's planning ``rules``; tests and benchmarks may ask
    for latency and a call log."""
    latency = os.environ.get(SCRIPTED_LATENCY_ENV, "")
    low, _, high = latency.partition("-")
    model = ScriptedModel(rules=rules)
    call_log = os.environ.get(SCRIPTED_CALL_LOG_ENV)
    wrapped: Model = model
    failure_rate = float(os.environ.get(SCRIPTED_FAILURE_RATE_ENV) or 0)
    if failure_rate:
        # Scripted transient failures (HTTP 500) for tests of the controls on a real broker.
        wrapped = FaultyModel(wrapped, failure_rate=failure_rate, seed=os.getpid())
    if os.environ.get(SCRIPTED_FAULTS_ENV) == "1":
        wrapped = MarkedFailures(wrapped)
    if latency or call_log:  # outermost: every attempt, failed or not, is logged
        wrapped = CallLogModel(wrapped, Path(call_log) if call_log else None, float(low or 0), float(high or low or 0))
    return wrapped
