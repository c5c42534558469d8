"""The revise verdict's pure parts: when a review sends a task back, the request the
specialist gets, which result a revising task waits for, what the rounds cost, the
specialist's records per revision, and what the specialist's model sees."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.models.base import Usage
from agentstream.serde import SchemaSet
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.revision import revision_messages
from agentstream.supervisor.app import final_result
from agentstream.supervisor.review import Review, review_messages
from agentstream.supervisor.revision import (
    REVISING,
    Round,
    asks_revision,
    is_awaited,
    is_revising,
    revised_results,
    revising_marker,
    revision_request,
    round_of,
    spent_after,
    with_spent,
)
from agentstream.topology import SupervisionSettings
from tests.unit.test_supervisor_review import RESULTS, _result

REVISE = Review("revise", "", "Name the refunded amount.", "billing", 0.6, Usage(100, 20, 0.002))
T0 = 1_700_000_000_000


def _marker(revision: int = 1, spent: dict[str, Any] | None = None) -> dict[str, Any]:
    billing = RESULTS[1]
    return revising_marker(revision_request(billing, REVISE, revision, T0), RESULTS, spent or {})


# -- when a review sends the task back ------------------------------------------------------
@pytest.mark.parametrize(
    ("review", "revisions", "bound", "asked"),
    [
        (REVISE, 0, 1, True),
        (REVISE, 1, 1, False),  # the bound reached: escalated instead (review.reviewed)
        (REVISE, 0, 0, False),
        (REVISE, 1, 2, True),
        (Review("publish", "ok", "", None, 0.9), 0, 1, False),
        (Review("escalate", "draft", "why", None, 0.9), 0, 1, False),
    ],
)
def test_a_revise_within_the_bound_sends_the_task_back(review: Review, revisions: int, bound: int, asked: bool) -> None:
    assert asks_revision(review, revisions, bound) is asked


def test_one_revision_is_allowed_unless_the_topology_says_otherwise() -> None:
    assert SupervisionSettings.model_validate({"model": {"models": {"standard": "openai:m"}}}).max_revisions == 1


def test_the_request_carries_the_task_the_feedback_and_the_earlier_answer_and_encodes() -> None:
    request = revision_request(RESULTS[1], REVISE, 1, T0)
    assert (request["task_id"], request["agent_type"], request["route"]) == ("t-1", "billing", ["account", "billing"])
    assert (request["revision"], request["feedback"], request["previous_output"]) == (1, "Name the refunded amount.", "Refunded.")
    assert request["input"] == RESULTS[1]["input"] and request["submitted_at"] == 1
    schemas = SchemaSet.load()
    assert schemas.decode_as("RoutedTask", schemas.encode("RoutedTask", request)) == request


# -- which result a revising task waits for -------------------------------------------------
def test_only_the_awaited_revision_of_the_specialist_sent_back_decides() -> None:
    marker = _marker()
    assert is_revising(marker) and marker["state"] == REVISING and not is_revising(None)
    assert is_awaited(marker, {**_result("billing", "Refunded 42 EUR."), "revision": 1})
    assert not is_awaited(marker, _result("billing", "Refunded."))  # the stale first run, late
    assert not is_awaited(marker, {**_result("account"), "revision": 1})
    assert not is_awaited(_marker(revision=2), {**_result("billing"), "revision": 1})  # an older revision


def test_the_revised_result_replaces_the_one_sent_back_and_the_others_are_kept() -> None:
    revised = {**_result("billing", "Refunded 42 EUR."), "revision": 1}
    received = revised_results(_marker(), revised)
    assert [(r["agent_type"], r["output"]) for r in received] == [("account", "Closed."), ("billing", "Refunded 42 EUR.")]
    assert final_result(received, received)["output"] == "Account: Closed.\n\nBilling: Refunded 42 EUR."


# -- what the rounds cost -------------------------------------------------------------------
def test_the_final_usage_counts_every_round_once() -> None:
    first = Round()
    spent = spent_after(first, RESULTS[1], REVISE.usage)  # the superseded billing run and the first review call
    assert (spent["input_tokens"], spent["llm_calls"], spent["cost_usd"]) == (110, 2, 0.012)
    again = round_of(_marker(spent=spent))
    assert again.revisions == 1 and "revision 1" in again.note and "Name the refunded amount." in again.note
    revised = {**_result("billing", "Refunded 42 EUR."), "revision": 1}
    received = revised_results(_marker(spent=spent), revised)
    final = with_spent(final_result(received, received), again)
    # Two current results (10 tokens, 1 call each) + the superseded run + the first review.
    assert (final["usage"]["input_tokens"], final["usage"]["llm_calls"], final["usage"]["cost_usd"]) == (130, 4, 0.032)
    assert with_spent(final, first) == final


def test_the_next_review_is_told_what_the_last_round_asked() -> None:
    note = round_of(_marker()).note
    messages = review_messages("Refund my payment", RESULTS, "", 4000, note)
    assert messages[-1].content.endswith(note)
    assert review_messages("Refund my payment", RESULTS, "", 4000)[-1].content.endswith("- billing (COMPLETED): Refunded.")


# -- the specialist: records per revision, and the conversation ----------------------------
def test_each_revision_is_a_run_with_records_of_its_own() -> None:
    first = {"task_id": "t-1"}
    assert ckpt.run_id(first) == ckpt.run_id({**first, "revision": 0}) == "t-1"  # as before revisions
    assert ckpt.run_id({**first, "revision": 1}) == "t-1#rev1"
    assert ckpt.done_key(ckpt.run_id({**first, "revision": 1})) != ckpt.done_key("t-1")
    # A scan of the first run's steps does not reach the revision's.
    assert not ckpt.step_key("t-1#rev1", 0, 0).startswith(ckpt.step_prefix("t-1"))


def test_a_revision_shows_the_model_its_earlier_answer_and_the_feedback() -> None:
    assert revision_messages({"task_id": "t-1", "input": "x"}) == []
    request = revision_request(RESULTS[1], REVISE, 1, T0)
    answer, feedback = revision_messages(request)
    assert (answer.role, answer.content) == ("assistant", "Refunded.")
    assert feedback.role == "user" and "Name the refunded amount." in feedback.content and "revision 1" in feedback.content
