"""The supervisor's review call: its own model chain, behind the same controls as a
specialist's (``ModelChains``), asked for a ``review`` of a task's results.

Never raises for a model failure: what comes back is the review or why there is none, and
the supervisor then publishes today's combine. It runs as spawned work, never in the
supervisor's commit path (supervisor/app.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentstream.controls.fallback import FallbackChain
from agentstream.controls.rate_limit import members_from_assignment
from agentstream.controls.registry import ModelControls
from agentstream.controls.settings import ControlSettings
from agentstream.models.base import Model, task_scope
from agentstream.models.errors import ModelError
from agentstream.specialist.model_chains import ModelChains
from agentstream.supervisor.review import MalformedReview, Review, parse_review, review_messages, review_tool
from agentstream.topology import SupervisionSettings

log = logging.getLogger(__name__)


class Reviewer:
    """Asks the supervisor's model for a review; one per supervisor process."""

    def __init__(self, supervision: SupervisionSettings, app_dir: Path | None, fixed: Model | None = None) -> None:
        self.settings = supervision
        # Read now, so a missing rubric file stops the supervisor at start-up.
        self.rubric = supervision.rubric_text(app_dir)
        self.controls = ModelControls(supervision.controls or ControlSettings(), agent="supervisor")
        chains = ModelChains(supervision.model, self.controls, fixed=fixed)
        self.chain = chains.for_tier(None)  # built now: a missing API key or SDK stops start-up
        if isinstance(self.chain, FallbackChain):
            # No canned answer when every model failed: the combine decides, and says why.
            self.chain.minimum_viable_answer = None
        self.model_id = chains.model_id(None)

    @classmethod
    def from_settings(cls, supervision: SupervisionSettings | None, app_dir: Path | None) -> Reviewer | None:
        """The reviewer when the topology configures ``supervision``, else None."""
        return cls(supervision, app_dir) if supervision is not None else None

    async def review(self, task_id: str, results: Sequence[Mapping[str, Any]], note: str = "") -> Review | str:
        """The model's review of ``results`` (one task's), or why there is none; ``note``
        says what an earlier round asked (a revision)."""
        task_input = next((r["input"] for r in results if r.get("input")), None)
        if task_input is None:  # results of specialists older than the input field
            return "the specialist results do not carry the task's input"
        timeout_s = self.settings.model.timeout_s
        agent_types = sorted({r["agent_type"] for r in results})
        messages = review_messages(task_input, results, self.rubric, self.settings.max_result_chars, note)
        try:
            with task_scope(task_id):
                async with asyncio.timeout(timeout_s):
                    response = await self.chain.complete(messages, [review_tool(agent_types)])
        except TimeoutError:
            return f"model {self.model_id} unavailable: no review within supervision.model.timeout_s {timeout_s:g} s"
        except ModelError as exc:  # breaker open, spent retries, refused key...
            return f"model {self.model_id} unavailable: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug must not strand the task: the combine still answers
            log.exception("supervisor model call for task %s failed unexpectedly", task_id)
            return f"model {self.model_id} failed: {type(exc).__name__}: {exc}"
        try:
            return parse_review(response, agent_types, self.settings.max_answer_chars)
        except MalformedReview as exc:
            return f"model {self.model_id} answer invalid: {exc}"

    def assigned(self, owned: int, partitions: int) -> None:
        """This member's share of the model quotas changed (a rebalance)."""
        self.controls.set_members(members_from_assignment(owned, partitions))
