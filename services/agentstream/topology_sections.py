"""The sections of a topology that configure one part of the pipeline: what a session
remembers (``sessions``), how the router picks specialists (``routing``), the supervisor as
an agent (``supervision``) and how an orchestrator scales a consumer group (``scaling``).
agentstream/topology.py holds the wiring and the loader, and re-exports these.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from agentstream.approvals.policy import DeadlinePolicy
from agentstream.controls.settings import ControlSettings
from agentstream.errors import ConfigurationError
from agentstream.models.config import ModelSettings


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SessionSettings(_Frozen):
    """What a session remembers and how many of its tasks may wait (router/session_gate.py)."""

    remember_turns: NonNegativeInt = 10  # earlier tasks (input + answer) each task sees; 0: none
    max_waiting: PositiveInt = 100  # tasks of one session held behind its open task; more are REJECTED
    idle_retention_s: PositiveInt = 30 * 24 * 3600  # an idle session's memory is deleted this long after its last task


class TierSignals(_Frozen):
    """Words that raise the rules' complexity tier of a task (router/tier.py), as regular
    expressions matched like routing rules: whole words, ignoring case."""

    complex: tuple[str, ...] = ()  # a match adds 2, complex on its own: a mistake here costs more than a big model
    urgent: tuple[str, ...] = ()  # a match adds 1 (so does metadata priority high/urgent/critical)
    several: tuple[str, ...] = ()  # a match adds 1: more than one problem in one task

    def compiled(self) -> dict[str, re.Pattern[str] | None]:
        return {kind: rule_expression(patterns) if patterns else None for kind, patterns in self.groups().items()}

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {"complex": self.complex, "urgent": self.urgent, "several": self.several}


class RoutingSettings(_Frozen):
    """How the router picks a task's specialists (router/decide.py, router/classifier.py).

    ``rules``: per specialist, regular expressions matched case-insensitively as whole
    words; a task goes to every specialist with a match, else to ``default``. ``model``
    (optional) turns on the LLM classifier, with the same ``controls`` as a specialist's
    calls; the rules decide whenever it fails, is unsure (confidence below
    ``min_confidence``) or answers something invalid. ``descriptions`` tell the model
    what each specialist handles (its agent type name otherwise).
    """

    default: str
    rules: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    tiers: TierSignals = TierSignals()
    descriptions: dict[str, str] = Field(default_factory=dict)
    model: ModelSettings | None = None
    controls: ControlSettings | None = None
    min_confidence: float = Field(0.5, ge=0, le=1)

    def compiled(self) -> dict[str, re.Pattern[str]]:
        """Each agent type's rules as one expression (checked when the topology loads)."""
        return {agent_type: rule_expression(patterns) for agent_type, patterns in self.rules.items() if patterns}

    def named_types(self) -> list[str]:
        """Every agent type the section names, for the check against the specialists."""
        return [self.default, *self.rules, *self.descriptions]


# Each revision is another specialist run and review call for one task: a few at most.
MAX_REVISIONS_LIMIT = 3


class SupervisionSettings(_Frozen):
    """The supervisor as an agent (supervisor/review.py): once a task's specialist results
    are in, ``model`` (with ``controls``, as a specialist's calls) reviews them against the
    task and the ``rubric`` (text, or ``rubric_file`` relative to the topology file), writes
    one answer and gives a verdict. Without this section the supervisor only combines.

    ``max_result_chars`` bounds each specialist answer shown to the model, and
    ``max_answer_chars`` the answer it may write (longer is an invalid answer).
    ``max_revisions``: how many times a task may be sent back to a specialist with the
    review's feedback (supervisor/revision.py); a revise asked beyond it is escalated to a
    human. 0 escalates every revise.

    ``escalate``: what an escalate verdict does. Unset: ``approval`` when the topology declares
    the topics a human's answer travels on (approvals, approval_decisions, control), else
    ``result`` (``Topology.escalation``). ``approval``: the task waits
    for a human, who approves the draft answer (or an edited one) or denies it, as a held
    tool call does (supervisor/escalation.py), with ``approval``'s deadline and outcome;
    ``result``: a FAILED result with error code NEEDS_HUMAN_REVIEW at once, the draft as
    its output, for deployments where nobody answers approvals.
    """

    model: ModelSettings
    controls: ControlSettings | None = None
    rubric: str = ""
    rubric_file: str | None = None
    max_result_chars: PositiveInt = 4000
    max_answer_chars: PositiveInt = 8000
    max_revisions: int = Field(1, ge=0, le=MAX_REVISIONS_LIMIT)
    escalate: Literal["approval", "result"] | None = None
    approval: DeadlinePolicy = DeadlinePolicy()

    @model_validator(mode="after")
    def _one_rubric(self) -> SupervisionSettings:
        if self.rubric and self.rubric_file:
            raise ValueError("supervision sets both rubric and rubric_file; keep one (the text, or the file that holds it)")
        return self

    def rubric_text(self, app_dir: Path | None) -> str:
        """The rubric: the inline text, or the file's content (relative to ``app_dir``)."""
        if self.rubric_file is None:
            return self.rubric
        path = Path(self.rubric_file)
        if not path.is_absolute():
            path = (app_dir or Path.cwd()) / path
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot read supervision.rubric_file {str(path)!r}: {exc.strerror}; give a path relative to the "
                "topology file, or the rubric text as supervision.rubric."
            ) from exc


class ScalingSettings(_Frozen):
    """How an orchestrator scales one agent type's consumer group (deploy/keda.py)."""

    # Records behind per replica before KEDA adds one. A specialist commits a task's offset once
    # its first checkpoint holds it, so lag counts the tasks waiting for one of a replica's
    # max_inflight loop slots (all busy), not the running ones.
    lag_threshold: PositiveInt = 100
    min_replicas: PositiveInt = 1  # one replica stays up: its restore is done before a burst comes
    max_replicas: PositiveInt | None = None  # None: the partition count (a replica more would sit idle)



def rule_expression(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One agent type's routing rules as one expression: any pattern, as whole words (so
    "bill" does not fire on "billion"), ignoring case."""
    return re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in patterns) + r")\b", re.IGNORECASE)
