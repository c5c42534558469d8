"""The LLM classifier's call: the router's own model chain, behind the same controls as a
specialist's (retries, breaker, rate limit, timeouts; ``ModelChains``), asked for a route.

Never raises for a model failure: what comes back is the route or why there is none, and
``classifier.choose`` lets the rules decide then. It runs as spawned work, never in the
router's commit path (router/app.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from agentstream.controls.fallback import FallbackChain
from agentstream.controls.rate_limit import members_from_assignment
from agentstream.controls.registry import ModelControls
from agentstream.controls.settings import ControlSettings
from agentstream.models.base import Model, task_scope
from agentstream.models.errors import ModelError
from agentstream.router.classifier import Classified, MalformedRoute, parse_route, route_messages, route_tool
from agentstream.specialist.model_chains import ModelChains
from agentstream.topology import RoutingSettings

log = logging.getLogger(__name__)


class ModelClassifier:
    """Asks the router's model for a route; one per router process."""

    def __init__(self, routing: RoutingSettings, known: Sequence[str], fixed: Model | None = None) -> None:
        if routing.model is None:
            raise ValueError("ModelClassifier needs routing.model; without one the rules route alone.")
        self.settings = routing.model
        self.known = sorted(known)
        self.descriptions = dict(routing.descriptions)
        self.controls = ModelControls(routing.controls or ControlSettings(), agent="router")
        chains = ModelChains(routing.model, self.controls, fixed=fixed)
        # Built now, so a missing API key or provider SDK stops the router at start-up.
        self.chain = chains.for_tier(None)
        if isinstance(self.chain, FallbackChain):
            # No canned "minimum viable answer" when every model failed: the chain raises the
            # last error, so the rules decide and the event says what failed.
            self.chain.minimum_viable_answer = None
        self.model_id = chains.model_id(None)
        self._tool = route_tool(self.known)

    @classmethod
    def from_settings(cls, routing: RoutingSettings, known: Sequence[str]) -> ModelClassifier | None:
        """The classifier when the topology configures ``routing.model``, else None."""
        return cls(routing, known) if routing.model is not None else None

    async def classify(self, task_id: str, text: str, turns: Sequence[Mapping[str, Any]]) -> Classified:
        """The model's route for ``text``, or why there is none (unavailable, invalid), with
        the call's usage when the model answered."""
        messages = route_messages(text, self.known, self.descriptions, turns)
        try:
            with task_scope(task_id):
                async with asyncio.timeout(self.settings.timeout_s):
                    response = await self.chain.complete(messages, [self._tool])
        except TimeoutError:
            timeout_s = self.settings.timeout_s
            return Classified(f"model {self.model_id} unavailable: no route within routing.model.timeout_s {timeout_s:g} s")
        except ModelError as exc:  # breaker open, spent retries, refused key...
            return Classified(f"model {self.model_id} unavailable: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must not strand the task: the rules still route it
            log.exception("router model call for task %s failed unexpectedly", task_id)
            return Classified(f"model {self.model_id} failed: {type(exc).__name__}: {exc}")
        try:
            return Classified(parse_route(response, self.known), response.usage)
        except MalformedRoute as exc:
            return Classified(f"model {self.model_id} answer invalid: {exc}", response.usage)

    def assigned(self, owned: int, partitions: int) -> None:
        """This member's share of the model quotas changed (a rebalance)."""
        self.controls.set_members(members_from_assignment(owned, partitions))
