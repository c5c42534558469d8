"""The ``candidate:`` section of a specialist: a second behavioural version of the agent
type, how much traffic it gets, and the rules that roll it back.

The candidate's own ``tools``, ``max_steps``, ``model`` (models, prompt, scripted rules,
budgets) and ``controls`` replace the live version's; what it leaves out it inherits.
Those are the inputs of the behaviour version (specialist/behavior.py), so a candidate
whose settings differ has a version of its own, stamped on everything it emits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from agentstream.controls.settings import ControlSettings
from agentstream.models.config import ModelSettings
from agentstream.topology_sections import _Frozen

CANARY: Literal["canary"] = "canary"
SHADOW: Literal["shadow"] = "shadow"
RolloutMode = Literal["canary", "shadow"]
# The name of a candidate's worker, group and stores: "<type>.<suffix>" (topology.variant_name).
VARIANT_SUFFIX: dict[str, str] = {CANARY: "candidate", SHADOW: "shadow"}
LIVE = "live"  # how reports name the version every session gets unless the split says otherwise
# The candidate's own input topic: "<live input topic>.candidate" (logical and physical).
CANDIDATE_TOPIC_SUFFIX = ".candidate"


class RollbackRules(_Frozen):
    """When the watcher (rollout/watch.py) sets a canary's weight to 0. Ratios compare the
    candidate with the live version over the same window; nothing is judged before the
    candidate has ``min_tasks`` results since its weight was last set."""

    min_completion: float = Field(0.85, ge=0, le=1)  # share of COMPLETED results, at least
    max_p95_ratio: PositiveFloat = 2.0  # candidate p95 latency / live p95, at most
    max_cost_ratio: PositiveFloat = 1.5  # candidate cost per task / live cost per task, at most
    max_error_rate: float = Field(0.05, ge=0, le=1)  # failed tool calls / tool calls, at most
    min_tasks: PositiveInt = 20


class PromoteRules(_Frozen):
    """When the watcher (rollout/promote.py) raises a healthy canary's weight: to the next
    of ``steps`` once the candidate has ``min_tasks`` results and ``min_window_s`` seconds
    at its current weight with every rollback rule held. It only raises: a weight of 0 (off,
    or rolled back) stays until an operator sets one, and the last step is where it stops."""

    steps: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0)
    min_tasks: PositiveInt = 20  # the candidate's results since its weight was last set
    min_window_s: NonNegativeFloat = 300.0  # seconds at the current weight

    @field_validator("steps")
    @classmethod
    def _increasing_shares(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if not steps or any(not 0 < w <= 1 for w in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"promote steps {list(steps)} must be increasing weights above 0 and at most 1, "
                             "e.g. [0.05, 0.2, 0.5, 1.0]")
        return steps


class CandidateSettings(_Frozen):
    """A candidate version of one specialist (README "Rolling out a new agent version").

    ``mode: canary``: the router sends ``weight`` of the sessions (sticky by a hash of the
    session id) to the candidate's own topic; ``agentstream rollout set-weight`` changes
    it without a restart. ``mode: shadow``: the candidate reads the live runs' transcripts
    in a group of its own and runs their tasks again for ``weight`` of the sessions, its
    side-effecting calls answered from the live run's record or refused, writing to
    ``shadow_results`` only.
    """

    weight: float = Field(0.0, ge=0, le=1)
    mode: RolloutMode = CANARY
    tools: tuple[str, ...] | None = None
    max_steps: PositiveInt | None = None
    model: ModelSettings | None = None
    controls: ControlSettings | None = None
    rollback: RollbackRules = RollbackRules()
    promote: PromoteRules | None = None  # None: the weight changes only by hand (and by a rollback)

    @model_validator(mode="after")
    def _promote_a_canary_only(self) -> CandidateSettings:
        if self.promote is not None and self.mode != CANARY:
            raise ValueError(f"promote applies to a canary, not to a {self.mode} (its weight is the share it mirrors); "
                             "remove promote or set mode: canary")
        return self

    def overrides(self) -> dict[str, object]:
        """The AgentType fields the candidate sets (the rest it inherits)."""
        fields = ("tools", "max_steps", "model", "controls")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}
