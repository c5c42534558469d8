"""The question the durable loop asks before it runs a model step's tool calls: may they
run, and with which arguments? Pure: the policies come from the topology, the decisions
from the checkpoint table (``a/<approval_id>`` records of this run)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentstream.approvals.policy import ApprovalPolicy
from agentstream.approvals.records import APPROVE, EDIT, PENDING, PendingCall, arguments_hash, denial_text
from agentstream.errors import AgentStreamError


class AwaitingApproval(AgentStreamError):
    """A model step called tools that need a human's approval first. Raised out of the
    agent loop, so no coroutine waits: the task resumes from its checkpoint when the
    decisions are in."""

    def __init__(self, calls: Sequence[PendingCall], answer_so_far: str | None = None) -> None:
        super().__init__(f"{len(calls)} tool call(s) wait for approval: {[c.tool for c in calls]}")
        self.calls = list(calls)
        self.answer_so_far = answer_so_far


@dataclass(frozen=True, slots=True)
class Cleared:
    """How a call may go: with ``arguments``, or not at all (``denial`` is its result)."""

    arguments: object
    denial: str | None = None


@dataclass
class ApprovalGate:
    """The approval state of one run: its policies and the decided calls by (step, index)."""

    policies: Mapping[str, ApprovalPolicy]
    describe: Callable[[str], str]
    decided: dict[tuple[int, int], Mapping[str, Any]] = field(default_factory=dict)

    def check(
        self, step: int, calls: Sequence[tuple[str, object]], done: Callable[[int], bool], answer_so_far: str | None = None,
    ) -> None:
        """Raise AwaitingApproval for the calls of ``step`` that need a human and have no
        decision yet (``done(index)``: the call's result is already recorded)."""
        waiting = [
            PendingCall(step, index, name, arguments, self.describe(name), policy.deadline_s, policy.on_deadline,
                        policy.escalate_to)
            for index, (name, arguments) in enumerate(calls)
            if not done(index) and (policy := self.policies.get(name)) is not None
            and self._undecided(step, index) and policy.needs_approval(arguments)
        ]
        if waiting:
            raise AwaitingApproval(waiting, answer_so_far)

    def clear(self, step: int, index: int, arguments: object) -> Cleared:
        """The arguments a call runs with: the model's, or the ones a human approved."""
        record = self.decided.get((step, index))
        if record is None or record["status"] == PENDING:
            return Cleared(arguments)
        decision = record["decision"]
        if record["status"] not in (APPROVE, EDIT):  # denied, or closed by a cancel: never run
            return Cleared(arguments, denial_text(decision))
        if record["status"] == APPROVE and arguments_hash(arguments) != record["arguments_hash"]:
            # The replayed step asks for another call than the one a human approved.
            return Cleared(arguments, "Error: this call differs from the one a human approved; it was not run.")
        if arguments_hash(decision["arguments"]) != decision["arguments_hash"]:
            return Cleared(arguments, "Error: the approved arguments do not match their hash; the call was not run.")
        return Cleared(decision["arguments"])

    def _undecided(self, step: int, index: int) -> bool:
        record = self.decided.get((step, index))
        return record is None or record["status"] == PENDING
