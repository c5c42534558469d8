"""The revise verdict: the supervisor sends a task back to one specialist with the
review's feedback, at most ``supervision.max_revisions`` times, and reviews the revised
result. Pure; supervisor/reviser.py writes and sends, supervisor/app.py decides when.

The revision state is the task's marker in the supervisor's ``dedupe`` table (written
through, like the "emitting" and "sent" markers of supervisor/emitter.py), in state
``revising``: the RoutedTask asked of the specialist (its ``revision`` is the run awaited),
the results of the round that asked it (the other specialists' results are kept there),
and what the earlier rounds cost. A task's marker goes revising → emitting → sent; while it
is revising, only the awaited revision's result decides the task: any other result of the
task (a late or redelivered earlier one) makes the supervisor send the request again,
which the specialist drops if it has that revision already (its records are per revision,
specialist/checkpoint.py run_id). So a crash anywhere repeats at most a request, never
asks a revision beyond the bound, and never takes a stale result for the revised one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentstream.models.base import Usage
from agentstream.supervisor.combine import sum_usage
from agentstream.supervisor.review import Review
from agentstream.tier import DEFAULT_TIER

REVISING = "revising"  # the marker state of a task sent back to a specialist

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Round:
    """Where a task's review stands: revisions asked so far, what the rounds before this
    one cost (superseded specialist results and earlier review calls), and what the last
    round asked, for the next review to see."""

    revisions: int = 0
    spent: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


def asks_revision(review: Review, revisions: int, max_revisions: int) -> bool:
    """Whether ``review`` sends the task back now: a revise within the bound. A revise
    beyond it is escalated (review.reviewed)."""
    return review.verdict == "revise" and review.agent_type is not None and revisions < max_revisions


def revision_request(superseded: Mapping[str, Any], review: Review, revision: int, now: int) -> Record:
    """The RoutedTask asking the specialist of ``superseded`` (its result that the review
    sent back) for revision ``revision``, with the feedback and its earlier answer.

    The session's earlier turns are not in a SpecialistResult, so the revision runs
    without them; it sees the task's input, its earlier answer and the feedback."""
    return {
        "task_id": superseded["task_id"], "session_id": superseded["session_id"], "tenant_id": superseded["tenant_id"],
        "input": str(superseded.get("input") or ""), "submitted_at": superseded.get("submitted_at") or now,
        "agent_type": superseded["agent_type"], "route": list(superseded["route"]),
        "tier": superseded.get("tier") or DEFAULT_TIER, "metadata": {}, "routed_at": now, "budget_usd": None,
        "history": [], "revision": revision, "feedback": review.feedback, "previous_output": superseded.get("output"),
        # Back on the revised result, so the router's call is still counted once when the
        # revised result replaces the one sent back (combine._usage).
        "router_usage": superseded.get("router_usage"),
    }


def revising_marker(request: Mapping[str, Any], results: Sequence[Mapping[str, Any]], spent: Mapping[str, Any]) -> Record:
    """The marker of a task sent back with ``request``; ``results`` are the round's."""
    return {"state": REVISING, "request": dict(request), "results": [dict(r) for r in results], "spent": dict(spent)}


def is_revising(marker: Mapping[str, Any] | None) -> bool:
    return marker is not None and marker.get("state") == REVISING


def is_awaited(marker: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    """Whether ``result`` is the revision the revising ``marker`` waits for (anything else
    of the task is an earlier result: late, redelivered, or another specialist's)."""
    request = marker["request"]
    return result["agent_type"] == request["agent_type"] and int(result.get("revision") or 0) == int(request["revision"])


def revised_results(marker: Mapping[str, Any], result: Mapping[str, Any]) -> list[Record]:
    """The round's results with the revised one in place of the one sent back; the
    revised one last (it completed the task: supervisor/app.py final_result)."""
    kept = [dict(r) for r in marker["results"] if r["agent_type"] != result["agent_type"]]
    return [*kept, dict(result)]


def round_of(marker: Mapping[str, Any]) -> Round:
    """The round that reviews the revision ``marker`` waits for."""
    request = marker["request"]
    note = (f"This is revision {request['revision']}: the reviewer sent the {request['agent_type']} specialist's "
            f"answer back with this feedback: {request['feedback']}")
    return Round(int(request["revision"]), dict(marker["spent"]), note)


def spent_after(earlier: Round, superseded: Mapping[str, Any], call: Usage | None) -> dict[str, Any]:
    """What the task has cost beyond its current results once ``superseded`` is sent back
    after a review call of usage ``call``."""
    review_call = {} if call is None else {"input_tokens": call.input_tokens, "output_tokens": call.output_tokens,
                                           "cost_usd": call.cost_usd, "llm_calls": 1}
    return sum_usage([earlier.spent, superseded.get("usage") or {}, review_call])


def with_spent(final: Mapping[str, Any], earlier: Round) -> Record:
    """The TaskResult ``final`` (a combine of the current results) charged with what the
    earlier rounds cost, so its usage covers every round."""
    if not earlier.spent:
        return dict(final)
    return {**final, "usage": sum_usage([final["usage"], earlier.spent])}
