"""The supervisor as an agent on a real broker: real worker processes, the specialists' and
the supervisor's models one OpenAI-compatible HTTP server (LoopbackServer) reached through
the official SDK, told apart by the tools each request offers.

Three tasks at once, each its own session: the review publishes one answer written from two
specialists' results; a review escalates (a FAILED result a human must look at, with the
draft and the reason); and a review answered with 503 falls back to today's combine, after
the supervisor's controls retried it, with the reason in the task's MODEL_CALL event.

And a supervisor SIGKILLed while a review is in flight reviews the task again on restart
and publishes one result: the task's other specialist results were kept until then.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer

from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.events import SPECIALIST_RESULT
from agentstream.supervisor.review import NEEDS_HUMAN_REVIEW, REVIEW_TOOL
from tests import support_desk
from tests.unit.test_providers_openai import LoopbackServer, Reply, error

from .harness import wait_for
from .model_server import is_review_request, openai_env, text_reply, tool_reply
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


def _topology(tmp_path: Path) -> Path:
    """The real topology with a supervision section: two attempts per review, a short backoff."""
    topology = yaml.safe_load((support_desk.APP / "topology.yaml").read_text())
    topology["agents"]["supervisor"]["supervision"] = {
        "model": {"models": {"standard": "openai:supervisor-model"}, "timeout_s": 20, "call_timeout_s": 10},
        "controls": {"retry": {"max_attempts": REVIEW_ATTEMPTS, "initial_backoff_s": 0.05, "max_backoff_s": 0.1},
                     "breaker": {"failure_threshold": 10}},
        "rubric_file": "rubric.md",
    }
    (tmp_path / "rubric.md").write_text(RUBRIC)
    path = support_desk.copy_app(tmp_path)
    path.write_text(yaml.safe_dump(topology))
    return path


class ModelSide:
    """Answers every specialist with ANSWER, and each review by its task: publish, escalate
    or a 503 outage; keeps the review requests."""

    def __init__(self) -> None:
        self.reviews: list[dict[str, Any]] = []
        self.hold_review = threading.Event()  # set: the next review stalls until released
        self.release = threading.Event()

    def answer(self, request: dict[str, Any]) -> Reply:
        body = request["json"]
        if not is_review_request(body):
            return text_reply(ANSWER)
        self.reviews.append(body)
        task = body["messages"][-1]["content"]
        if OUTAGE in task:
            return error(503, "The server is overloaded or not ready yet.", None, "server_error")
        if self.hold_review.is_set():
            self.hold_review.clear()
            self.release.wait(60)
        if RISKY in task:
            verdict = {"verdict": "escalate", "answer": DRAFT, "feedback": WHY, "confidence": 0.7}
        else:
            verdict = {"verdict": "publish", "answer": COMBINED, "feedback": "", "confidence": 0.9}
        return tool_reply([(REVIEW_TOOL, verdict)])

    def reviews_of(self, text: str) -> list[dict[str, Any]]:
        return [body for body in self.reviews if text in body["messages"][-1]["content"]]


def test_the_supervisor_model_publishes_escalates_and_falls_back_to_the_combine(bootstrap: str, tmp_path: Path) -> None:
    model = ModelSide()
    tasks = {text: new_task(text, f"s-{uuid.uuid4().hex[:8]}", "acme") for text in (TWO_PARTS, RISKY, OUTAGE)}
    ids = {task["task_id"] for task in tasks.values()}
    with LoopbackServer(model.answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_topology(tmp_path), env=openai_env(server))
        try:
            stack.start_all(WORKERS)
            stack.submit(list(tasks.values()))
            results = stack.results(ids, timeout=120)
        finally:
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    assert all(len(results[task_id]) == 1 for task_id in ids), results  # one TaskResult per task
    published, escalated, combined = (results[tasks[text]["task_id"]][0] for text in (TWO_PARTS, RISKY, OUTAGE))

    assert (published["status"], published["output"], published["agents"]) == ("COMPLETED", COMBINED, ["account", "billing"])
    assert published["review"] == {"verdict": "publish", "feedback": "", "confidence": 0.9, "model": "openai:gpt-4o-mini"}
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
    assert details[tasks[OUTAGE]["task_id"]].startswith(
        "combined without review: model openai:gpt-4o-mini unavailable: ModelServerError: "), details
    assert details[tasks[TWO_PARTS]["task_id"]] == "reviewed by openai:gpt-4o-mini: publish, confidence 0.90"


def test_a_supervisor_killed_while_it_reviews_reviews_again_and_publishes_once(bootstrap: str, tmp_path: Path) -> None:
    model = ModelSide()
    model.hold_review.set()
    task = new_task(TWO_PARTS, f"k-{uuid.uuid4().hex[:8]}", "acme")
    with LoopbackServer(model.answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_topology(tmp_path), env=openai_env(server))
        try:
            stack.start_all(WORKERS)
            stack.submit([task])
            wait_for(lambda: bool(model.reviews_of(TWO_PARTS)), 60, "the supervisor's review call")
            # Killed once a checkpoint after the review began has flushed the supervisor's
            # tables: the sentinel's pending entry, written after the task was complete, is
            # then in the changelog, and so is any earlier write of the task's.
            sentinel = _send_sentinel(stack, task["session_id"])
            wait_for_key(stack, stack.topology.changelog_topic("supervisor", "pending"), sentinel, 60)
            kill_and_restart(stack, "supervisor", model.release, r": assigned ")
            results = stack.results({task["task_id"]}, timeout=120)
        finally:
            model.release.set()
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    got = results[task["task_id"]]
    assert len(got) == 1 and (got[0]["status"], got[0]["output"]) == ("COMPLETED", COMBINED), got
    assert len(model.reviews_of(TWO_PARTS)) == 2  # the review in flight, asked again by the new supervisor


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
