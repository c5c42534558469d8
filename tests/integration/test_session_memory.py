"""A session remembers, across specialists, and its tasks run one at a time through the
whole pipeline — also when the router is SIGKILLed while a task waits.

As the issue that asked for it tried it: an OpenAI-compatible server that logs request
bodies; "I was charged twice on invoice INV-1002" (billing), then a technical question,
then "and what about the other invoice?" (billing again) in one session. Each later
request must hold the earlier questions and answers, and must reach the model only once
the earlier task has its result. Another session meanwhile is not held up.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.serde import SchemaSet
from tests.unit.test_providers_openai import LoopbackServer, Reply, completion

from .harness import wait_for
from .model_server import openai_env
from .test_durable import DurableStack

FIRST = "I was charged twice on invoice INV-1002"
SECOND = "The mobile app crashes when I open the settings page"
THIRD = "and what about the other invoice?"
OTHER = "Please send me a receipt for my last payment"
ANSWERS = {
    FIRST: "INV-1002 was charged twice; the second charge is refunded.",
    SECOND: "Update the app to 4.2; the crash on that page is fixed there.",
    THIRD: "Your other invoice, INV-1003, was charged once and is paid.",
    OTHER: "A receipt for your last payment is on its way.",
}
SCHEMAS = SchemaSet.load()
WORKERS = {
    "router": ["router"],
    "billing": ["specialist", "--type", "billing"],
    "technical": ["specialist", "--type", "technical"],
    "supervisor": ["supervisor"],
}


class ChatLog:
    """The model's side: answers each question, holding the first one until released,
    and keeps every request with the time it arrived."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, list[dict[str, Any]]]] = []  # (epoch s, question, messages)
        self.release_first = threading.Event()

    def answer(self, request: dict[str, Any]) -> Reply:
        messages = request["json"]["messages"]
        question = messages[-1]["content"]
        self.requests.append((time.time(), question, messages))
        if question == FIRST:
            self.release_first.wait(120)
        return Reply(body=completion({"content": ANSWERS.get(question, "I do not know.")}))

    def asked(self, question: str) -> list[tuple[float, list[dict[str, Any]]]]:
        return [(at, messages) for at, asked, messages in self.requests if asked == question]


def test_a_session_remembers_across_specialists_and_runs_in_order_through_a_router_kill(
    bootstrap: str, tmp_path: Path
) -> None:
    chat = ChatLog()
    session, other_session = f"s-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    tasks = [new_task(text, session, "acme") for text in (FIRST, SECOND, THIRD)]
    other = new_task(OTHER, other_session, "acme")
    with LoopbackServer(chat.answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", env=openai_env(server))
        try:
            stack.start_all(WORKERS)
            stack.submit(tasks)
            wait_for(lambda: bool(chat.asked(FIRST)), 60, "the first task's model call")
            # Another session is not held up by this one's open task.
            stack.submit([other])
            assert stack.results({other["task_id"]}, timeout=60)[other["task_id"]][0]["status"] == "COMPLETED"
            # The router dies while the session's later tasks wait in its table.
            stack.workers["router"].kill()
            stack.workers["router"].wait(10)
            stack.start("router", "router").wait_for_line(r": assigned .*tasks", 60)
            assert not chat.asked(SECOND) and not chat.asked(THIRD), "a later task started before the first ended"
            chat.release_first.set()
            results = stack.results({t["task_id"] for t in tasks}, timeout=120)
        finally:
            chat.release_first.set()
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes

    first, second, third = (results[t["task_id"]] for t in tasks)
    for got, agent in ((first, "billing"), (second, "technical"), (third, "billing")):
        assert len(got) == 1 and got[0]["status"] == "COMPLETED" and got[0]["agents"] == [agent], got
    # One at a time: each later task reached the model only after the earlier one's result.
    assert chat.asked(SECOND)[0][0] * 1000 >= first[0]["completed_at"]
    assert chat.asked(THIRD)[0][0] * 1000 >= second[0]["completed_at"]
    # Memory: the technical specialist sees the billing turn, billing sees both turns.
    assert _conversation(chat.asked(SECOND)[0][1]) == [("user", FIRST), ("assistant", ANSWERS[FIRST]), ("user", SECOND)]
    assert _conversation(chat.asked(THIRD)[0][1]) == [
        ("user", FIRST), ("assistant", ANSWERS[FIRST]),
        ("user", SECOND), ("assistant", ANSWERS[SECOND]),
        ("user", THIRD),
    ]
    # The other session started with no memory of this one.
    assert _conversation(chat.asked(OTHER)[0][1]) == [("user", OTHER)]


def _conversation(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The turns the model was shown after its system prompt."""
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]


def test_tasks_produced_without_the_session_key_are_rekeyed_and_all_answered(bootstrap: str, tmp_path: Path) -> None:
    """Found by the fuzz: a task with no key (or another key) lands on a partition that is
    not its session's, so its session's record never saw the result that would let the
    next task go, and the session was stuck. The router sends it again keyed by the session.
    (No order can be asked of tasks spread over partitions: Kafka orders within one.)"""
    stack = DurableStack(bootstrap, tmp_path, latency="0")
    session = f"k-{uuid.uuid4().hex[:8]}"
    tasks = [new_task(f"Please check invoice INV-100{i + 1}", session, "acme", requested_agent="billing") for i in range(4)]
    try:
        for name in ("router", "billing", "supervisor"):
            stack.start(name, *WORKERS[name])
        for worker in stack.workers.values():
            worker.wait_for_line(r": assigned ", 60)
        producer = Producer(producer_config(bootstrap))
        for i, task in enumerate(tasks):  # no key, or a key that is not the session
            producer.produce(stack.topology.topic("tasks"), SCHEMAS.encode("TaskSubmitted", task), None if i % 2 else f"other-{i}")
        assert producer.flush(30) == 0
        results = stack.results({t["task_id"] for t in tasks}, timeout=120)
        rekeyed = stack.workers["router"].matching(r"not by its session; sent again keyed by session")
    finally:
        codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    assert len(rekeyed) == len(tasks)
    finished = [results[t["task_id"]] for t in tasks]
    assert all(len(got) == 1 and got[0]["status"] == "COMPLETED" for got in finished), finished
