"""The supervisor as an agent on a real broker: real worker processes, the specialists' and
the supervisor's models one OpenAI-compatible HTTP server (LoopbackServer) reached through
the official SDK, told apart by the tools each request offers.

Three tasks at once, each its own session: the review publishes one answer written from two
specialists' results; a review escalates (with ``supervision.escalate: result``, a FAILED
result a human must look at, with the draft and the reason); and a review answered with 503 falls back to today's combine, after
the supervisor's controls retried it, with the reason in the task's MODEL_CALL event.

And a supervisor SIGKILLed while a review is in flight reviews the task again on restart
and publishes one result: the task's other specialist results were kept until then.

Revisions: a review that says revise sends the task back to that specialist, whose model
sees its earlier answer and the feedback; the revised result is reviewed again with the
other specialist's result kept, and one result is published whose usage covers both
rounds. A second revise, beyond max_revisions 1, is escalated. And a supervisor, or the
specialist, SIGKILLed between the revision request and the revised result still leaves
exactly one result.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.events import SPECIALIST_RESULT
from agentstream.supervisor.review import NEEDS_HUMAN_REVIEW, REVIEW_TOOL
from tests import support_desk
from tests.unit.test_providers_openai import LoopbackServer, Reply, error

from .harness import wait_for
from .model_server import HELD_CALL_LIMITS, HOLD_S, is_review_request, openai_env, text_reply, tool_reply
from .test_durable import SCHEMAS, DurableStack
from .test_llm_router import WORKERS, kill_and_restart, task_event_details, wait_for_key

# The rules route each of them (router/decide.py); no router model here.
TWO_PARTS = "Refund my last payment and change my password"  # billing + account
RISKY = "Refund invoice INV-77 twice, my lawyer says so"  # billing
OUTAGE = "Where is the receipt for my last payment?"  # billing
ANSWER = "Done: your request is handled."
COMBINED = "Your payment is refunded and your password is changed."
DRAFT = "We will refund INV-77 twice."
WHY = "A double refund needs a manager's approval."
RUBRIC = "Never promise more than one refund of the same invoice."
REVIEW_ATTEMPTS = 2
# Revisions: the first review of REVISED_ONCE sends billing back, the second publishes;
# every review of STUBBORN sends billing back.
REVISED_ONCE = "Refund my duplicate payment and change my password"  # billing + account
STUBBORN = "Refund invoice INV-90 at once"  # billing
FEEDBACK = "Say which payment was refunded and the amount."
REVISED = "Refunded payment P-7 of 42 EUR."
FINAL = "Payment P-7 (42 EUR) is refunded and your password is changed."


def _topology(tmp_path: Path, max_revisions: int | None = None, **supervision: Any) -> Path:
    """The real topology with a supervision section: two attempts per review, a short
    backoff; an escalation is a FAILED result at once unless ``supervision`` says otherwise
    (test_supervisor_escalation.py: a human decides)."""
    topology = yaml.safe_load((support_desk.APP / "topology.yaml").read_text())
    topology["agents"]["supervisor"]["supervision"] = {
        "model": {"models": {"standard": "openai:supervisor-model"}, **HELD_CALL_LIMITS},
        "controls": {"retry": {"max_attempts": REVIEW_ATTEMPTS, "initial_backoff_s": 0.05, "max_backoff_s": 0.1},
                     "breaker": {"failure_threshold": 10}},
        "rubric_file": "rubric.md",
        "escalate": "result",
        **supervision,
    }
    if max_revisions is not None:
        topology["agents"]["supervisor"]["supervision"]["max_revisions"] = max_revisions
    topology["agents"]["billing"]["model"].update(HELD_CALL_LIMITS)  # its revision runs are held (hold_revision)
    (tmp_path / "rubric.md").write_text(RUBRIC)
    path = support_desk.copy_app(tmp_path)
    path.write_text(yaml.safe_dump(topology))
    return path


class ModelSide:
    """Answers every specialist with ANSWER, and each review by its task: publish, escalate
    or a 503 outage; keeps the review requests."""

    def __init__(self) -> None:
        self.reviews: list[dict[str, Any]] = []
        self.revision_runs: list[dict[str, Any]] = []  # specialist requests that carry FEEDBACK
        self.hold_review = threading.Event()  # set: the next review stalls until released
        self.hold_revision = threading.Event()  # set: the next revision run's call stalls until released
        self.release = threading.Event()

    def answer(self, request: dict[str, Any]) -> Reply:
        body = request["json"]
        if not is_review_request(body):
            return self._specialist(body)
        self.reviews.append(body)
        task = body["messages"][-1]["content"]
        if REVISED_ONCE in task or STUBBORN in task:
            return self._revise_or_publish(task)
        if OUTAGE in task:
            return error(503, "The server is overloaded or not ready yet.", None, "server_error")
        if self.hold_review.is_set():
            self.hold_review.clear()
            self.release.wait(HOLD_S)
        if RISKY in task:
            verdict = {"verdict": "escalate", "answer": DRAFT, "feedback": WHY, "confidence": 0.7}
        else:
            verdict = {"verdict": "publish", "answer": COMBINED, "feedback": "", "confidence": 0.9}
        return tool_reply([(REVIEW_TOOL, verdict)])

    def _specialist(self, body: dict[str, Any]) -> Reply:
        if not any(FEEDBACK in (message.get("content") or "") for message in body["messages"]):
            return text_reply(ANSWER)
        self.revision_runs.append(body)
        if self.hold_revision.is_set():
            self.hold_revision.clear()
            self.release.wait(HOLD_S)
        return text_reply(REVISED)

    @staticmethod
    def _revise_or_publish(task: str) -> Reply:
        if REVISED_ONCE in task and "This is revision 1" in task:
            verdict = {"verdict": "publish", "answer": FINAL, "feedback": "", "confidence": 0.9}
        else:
            verdict = {"verdict": "revise", "answer": "", "feedback": FEEDBACK, "agent_type": "billing", "confidence": 0.6}
        return tool_reply([(REVIEW_TOOL, verdict)])

    def revision_runs_of(self, text: str) -> list[dict[str, Any]]:
        return [body for body in self.revision_runs if any(text in (m.get("content") or "") for m in body["messages"])]

    def reviews_of(self, text: str) -> list[dict[str, Any]]:
        return [body for body in self.reviews if text in body["messages"][-1]["content"]]


def _one_result_each(
    bootstrap: str, topology_path: Path, model: ModelSide, texts: tuple[str, ...]
) -> tuple[DurableStack, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run a task of each of ``texts`` at once, each its own session: the (stopped) stack,
    the tasks, and each task's one TaskResult, in the order of ``texts``."""
    tasks = [new_task(text, f"s-{uuid.uuid4().hex[:8]}", "acme") for text in texts]
    ids = {task["task_id"] for task in tasks}
    with LoopbackServer(model.answer).running() as server:
        stack = DurableStack(bootstrap, topology_path.parent, latency="0", topology_path=topology_path, env=openai_env(server))
        try:
            stack.start_all(WORKERS)
            stack.submit(tasks)
            results = stack.results(ids, timeout=120)
        finally:
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    assert all(len(results[task_id]) == 1 for task_id in ids), results  # one TaskResult per task
    return stack, tasks, [results[task["task_id"]][0] for task in tasks]


def test_the_supervisor_model_publishes_escalates_and_falls_back_to_the_combine(bootstrap: str, tmp_path: Path) -> None:
    model = ModelSide()
    stack, tasks, (published, escalated, combined) = _one_result_each(
        bootstrap, _topology(tmp_path), model, (TWO_PARTS, RISKY, OUTAGE))
    ids = {task["task_id"] for task in tasks}
    two_parts, _, outage = tasks

    assert (published["status"], published["output"], published["agents"]) == ("COMPLETED", COMBINED, ["account", "billing"])
    assert published["review"] == {"verdict": "publish", "feedback": "", "confidence": 0.9, "model": "openai:gpt-4o-mini",
                                   "revisions": 0}
    assert published["models"]["supervisor"] == "openai:gpt-4o-mini"
    review = model.reviews_of(TWO_PARTS)[0]
    assert RUBRIC in review["messages"][0]["content"]  # read from the file beside the topology
    assert f"- account (COMPLETED): {ANSWER}" in review["messages"][-1]["content"]

    assert (escalated["status"], escalated["output"]) == ("FAILED", DRAFT)
    assert escalated["error"] == {"code": NEEDS_HUMAN_REVIEW, "message": WHY}
    assert escalated["review"]["verdict"] == "escalate"

    assert (combined["status"], combined["output"], combined["review"]) == ("COMPLETED", ANSWER, None)
    assert "supervisor" not in combined["models"]
    assert len(model.reviews_of(OUTAGE)) == REVIEW_ATTEMPTS  # the supervisor's controls retried the 503
    details = task_event_details(stack, ids, "MODEL_CALL", "supervisor")
    assert details[outage["task_id"]].startswith(
        "combined without review: model openai:gpt-4o-mini unavailable: ModelServerError: "), details
    assert details[two_parts["task_id"]] == "reviewed by openai:gpt-4o-mini: publish, confidence 0.90"


def _kill_when(
    bootstrap: str, tmp_path: Path, model: ModelSide, task: dict[str, Any], ready: Callable[[DurableStack], None],
    worker: str = "supervisor",
) -> list[dict[str, Any]]:
    """Run ``task``; once ``ready(stack)`` returns (a model call is held), SIGKILL
    ``worker``, release the call, start the worker again: the task's TaskResults."""
    with LoopbackServer(model.answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_topology(tmp_path), env=openai_env(server))
        try:
            stack.start_all(WORKERS)
            stack.submit([task])
            ready(stack)
            kill_and_restart(stack, worker, model.release, r": assigned ")
            results = stack.results({task["task_id"]}, timeout=120)
        finally:
            model.release.set()
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    return results[task["task_id"]]


def test_a_supervisor_killed_while_it_reviews_reviews_again_and_publishes_once(bootstrap: str, tmp_path: Path) -> None:
    model = ModelSide()
    model.hold_review.set()
    task = new_task(TWO_PARTS, f"k-{uuid.uuid4().hex[:8]}", "acme")

    def reviewing(stack: DurableStack) -> None:
        wait_for(lambda: bool(model.reviews_of(TWO_PARTS)), 60, "the supervisor's review call")
        # Killed once a checkpoint after the review began has flushed the supervisor's
        # tables: the sentinel's pending entry, written after the task was complete, is
        # then in the changelog, and so is any earlier write of the task's.
        sentinel = _send_sentinel(stack, task["session_id"])
        wait_for_key(stack, stack.topology.changelog_topic("supervisor", "pending"), sentinel, 60)

    got = _kill_when(bootstrap, tmp_path, model, task, reviewing)
    assert len(got) == 1 and (got[0]["status"], got[0]["output"]) == ("COMPLETED", COMBINED), got
    assert len(model.reviews_of(TWO_PARTS)) == 2  # the review in flight, asked again by the new supervisor


def test_a_revise_sends_the_task_back_once_and_a_second_revise_is_escalated(bootstrap: str, tmp_path: Path) -> None:
    model = ModelSide()
    _, _, (revised, escalated) = _one_result_each(bootstrap, _topology(tmp_path, max_revisions=1), model,
                                                  (REVISED_ONCE, STUBBORN))

    # The billing specialist's model saw its earlier answer, then the feedback.
    (rerun,) = model.revision_runs_of(REVISED_ONCE)
    roles = [(m["role"], m.get("content")) for m in rerun["messages"]]
    assert roles[-2] == ("assistant", ANSWER) and roles[-1][0] == "user" and FEEDBACK in roles[-1][1], roles
    assert roles[-3] == ("user", REVISED_ONCE)
    # The second review saw the revised answer beside account's, kept from the first round.
    first, second = model.reviews_of(REVISED_ONCE)
    assert f"- billing (COMPLETED): {REVISED}" in second["messages"][-1]["content"]
    assert f"- account (COMPLETED): {ANSWER}" in second["messages"][-1]["content"]
    assert "This is revision 1" not in first["messages"][-1]["content"]
    assert (revised["status"], revised["output"], revised["agents"]) == ("COMPLETED", FINAL, ["account", "billing"])
    assert revised["review"] == {"verdict": "publish", "feedback": "", "confidence": 0.9, "model": "openai:gpt-4o-mini",
                                 "revisions": 1}
    # Both rounds are paid for: account, billing, billing's revision, two reviews; 12+3 tokens each.
    usage = revised["usage"]
    assert (usage["llm_calls"], usage["input_tokens"], usage["output_tokens"]) == (5, 60, 15), usage

    assert (escalated["status"], escalated["error"]["code"]) == ("FAILED", NEEDS_HUMAN_REVIEW)
    why = f"revision 2 of billing asked, beyond supervision.max_revisions 1: {FEEDBACK}"
    assert escalated["error"]["message"] == why
    assert (escalated["review"]["verdict"], escalated["review"]["revisions"]) == ("escalate", 1)
    assert len(model.revision_runs_of(STUBBORN)) == 1 and len(model.reviews_of(STUBBORN)) == 2  # no second revision
    assert escalated["usage"]["llm_calls"] == 4  # billing, its revision, two reviews


@pytest.mark.parametrize(
    ("worker", "revision_runs"),
    [
        # The new supervisor takes the revised result for the awaited one (its revising
        # marker was written before the request); a request sent again is dropped by the
        # specialist, which has that revision already.
        ("supervisor", 1),
        # The new billing worker resumes the revision from its own checkpoint (the first
        # run's done marker does not make it a duplicate) and repeats only the call in flight.
        ("billing", 2),
    ],
)
def test_a_worker_killed_while_a_revision_runs_leaves_one_result(
    bootstrap: str, tmp_path: Path, worker: str, revision_runs: int
) -> None:
    model = ModelSide()
    model.hold_revision.set()
    task = new_task(REVISED_ONCE, f"v-{uuid.uuid4().hex[:8]}", "acme")

    def revising(stack: DurableStack) -> None:
        # The revision request is out (the specialist's model call for it is held), and so
        # the revising marker is in the supervisor's dedupe changelog.
        wait_for(lambda: bool(model.revision_runs_of(REVISED_ONCE)), 60, "the billing specialist's revision run")
        wait_for_key(stack, stack.topology.changelog_topic("supervisor", "dedupe"), task["task_id"], 60)

    got = _kill_when(bootstrap, tmp_path, model, task, revising, worker)
    assert len(got) == 1 and (got[0]["status"], got[0]["output"]) == ("COMPLETED", FINAL), got
    assert got[0]["review"]["revisions"] == 1
    assert len(model.revision_runs_of(REVISED_ONCE)) == revision_runs
    assert len(model.reviews_of(REVISED_ONCE)) == 2


def _send_sentinel(stack: DurableStack, session_id: str) -> str:
    """A specialist result of a made-up two-specialist task on the session's partition: the
    supervisor keeps it in ``pending``, waiting for the other, for ever."""
    task_id = f"sentinel-{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {
        "task_id": task_id, "session_id": session_id, "tenant_id": "acme", "agent_type": "billing",
        "route": ["account", "billing"], "status": "COMPLETED", "output": "x", "error": None, "tools_used": [],
        "usage": {}, "behavior_version": "v1", "submitted_at": 1, "started_at": 1, "finished_at": 1,
    }
    producer = Producer(producer_config(stack.bootstrap))
    producer.produce(stack.topology.topic("supervisor"), SCHEMAS.encode(SPECIALIST_RESULT, result), session_id)
    assert producer.flush(30) == 0
    return task_id
