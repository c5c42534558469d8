"""The LLM router on a real broker, its model an OpenAI-compatible HTTP server (LoopbackServer)
reached through the official SDK: a task no rule recognises goes where the model says,
here to two specialists at once; when the server answers 503 the rules route the next
task, and both the router's log and the task's ROUTED event say which path decided.

Both tasks are one session, so the second waits in the router's gate and is classified
only when it leaves it, after the first task's result; and a router SIGKILLed while its
classification is in flight classifies the task again on restart, and loses nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from agentstream.cancellation import cancel_record, send_cancel
from agentstream.client import new_task
from agentstream.events import TASK_EVENT
from agentstream.serde import SchemaSet
from agentstream.settings import COMMIT_INTERVAL_ENV
from agentstream.router.classifier import ROUTE_TOOL
from tests import support_desk
from tests.unit.test_providers_openai import LoopbackServer, Reply, error

from .harness import latest_by_key, read_all, wait_for
from .model_server import HELD_CALL_LIMITS, HOLD_S, is_route_request, openai_env, text_reply, tool_reply
from .test_durable import DurableStack

# No rule matches it: the rules alone would send it to the default, technical.
UNRULED = "Please forget everything you store about me and stop the monthly direct debit"
# The rules send it to billing ("payment", "receipt").
RULED = "Where is the receipt for my last payment?"
ANSWER = "Done: your request is handled."
WORKERS = {
    "router": ["router"],
    "account": ["specialist", "--type", "account"],
    "billing": ["specialist", "--type", "billing"],
    "supervisor": ["supervisor"],
}
ROUTER_ATTEMPTS = 2
COMMIT_S = 8  # the router's checkpoint interval where a test kills it between two checkpoints
SCHEMAS = SchemaSet.load()


def _topology(tmp_path: Path) -> Path:
    """The real topology with a router model: two attempts per call, a short backoff."""
    topology = yaml.safe_load((support_desk.APP / "topology.yaml").read_text())
    topology["agents"]["router"]["routing"].update(
        model={"models": {"standard": "openai:router-model"}, **HELD_CALL_LIMITS},
        controls={"retry": {"max_attempts": ROUTER_ATTEMPTS, "initial_backoff_s": 0.05, "max_backoff_s": 0.1}},
        min_confidence=0.6,
    )
    path = support_desk.copy_app(tmp_path)
    path.write_text(yaml.safe_dump(topology))
    return path


class ModelSide:
    """Answers route requests for UNRULED with two specialists, RULED with a 503 outage,
    and every specialist's request with ANSWER; keeps each request with its time."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, dict[str, Any]]] = []  # (epoch s, task text, body)
        self.hold_route = threading.Event()  # set: the next UNRULED route request stalls until released
        self.release = threading.Event()

    def answer(self, request: dict[str, Any]) -> Reply:
        body = request["json"]
        text = body["messages"][-1]["content"]
        self.requests.append((time.time(), text, body))
        if not is_route_request(body):
            return text_reply(ANSWER)
        if text.endswith(RULED):
            return error(503, "The server is overloaded or not ready yet.", None, "server_error")
        if self.hold_route.is_set():
            self.hold_route.clear()
            self.release.wait(HOLD_S)
        return tool_reply([(ROUTE_TOOL, {"agent_types": ["billing", "account"], "tier": "complex", "confidence": 0.9})])

    def routes_asked(self, text: str) -> list[float]:
        """When ``text`` was the task to route (a later task's request quotes it as context)."""
        return [at for at, asked, body in self.requests if is_route_request(body) and asked.endswith(text)]

    def specialists_asked(self, text: str) -> list[float]:
        return [at for at, asked, body in self.requests if not is_route_request(body) and asked == text]


def test_the_model_routes_what_no_rule_knows_and_the_rules_route_through_an_outage(
    bootstrap: str, tmp_path: Path
) -> None:
    model = ModelSide()
    session = f"s-{uuid.uuid4().hex[:8]}"
    unruled, ruled = new_task(UNRULED, session, "acme"), new_task(RULED, session, "acme")
    with LoopbackServer(model.answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_topology(tmp_path), env=openai_env(server))
        try:
            stack.start_all(WORKERS)
            stack.submit([unruled, ruled])
            results = stack.results({unruled["task_id"], ruled["task_id"]}, timeout=120)
            router_log = "\n".join(stack.workers["router"].matching(r"routed to"))
        finally:
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes

    first, second = results[unruled["task_id"]], results[ruled["task_id"]]
    assert len(first) == 1 and first[0]["status"] == "COMPLETED", first
    assert first[0]["agents"] == ["account", "billing"] and first[0]["tier"] == "complex", first
    assert len(second) == 1 and second[0]["status"] == "COMPLETED" and second[0]["agents"] == ["billing"], second
    # The router's model calls went through its controls: the 503 was retried, then the rules decided.
    assert len(model.routes_asked(UNRULED)) == 1
    assert len(model.routes_asked(RULED)) == ROUTER_ATTEMPTS
    # The second task was classified when it left the gate: after the first one's result.
    assert model.routes_asked(RULED)[0] * 1000 >= first[0]["completed_at"]
    routed = _routed_details(stack, {unruled["task_id"], ruled["task_id"]})
    assert routed[unruled["task_id"]] == "account,billing tier=complex by model: openai:gpt-4o-mini, confidence 0.90"
    assert routed[ruled["task_id"]].startswith(
        "billing tier=simple by rules: model openai:gpt-4o-mini unavailable: ModelServerError: "), routed
    assert f"task {ruled['task_id']} routed to billing tier=simple by rules: model openai:gpt-4o-mini unavailable" in router_log


def test_a_router_killed_while_it_classifies_classifies_again_and_loses_nothing(
    bootstrap: str, tmp_path: Path
) -> None:
    model = ModelSide()
    model.hold_route.set()
    task = new_task(UNRULED, f"k-{uuid.uuid4().hex[:8]}", "acme")
    with LoopbackServer(model.answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_topology(tmp_path), env=openai_env(server))
        try:
            stack.start_all(WORKERS)
            stack.submit([task])
            wait_for(lambda: bool(model.routes_asked(UNRULED)), 60, "the router's model call")
            # Killed once the open, undecided entry is in the changelog: the task's record is
            # then a duplicate to the next router, so only resend_open can route it.
            _wait_for_changelog(stack, task["session_id"], 60)
            kill_and_restart(stack, "router", model.release, r": assigned .*tasks")
            results = stack.results({task["task_id"]}, timeout=120)
        finally:
            model.release.set()
            codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    got = results[task["task_id"]]
    assert len(got) == 1 and got[0]["status"] == "COMPLETED" and got[0]["agents"] == ["account", "billing"], got
    assert len(model.routes_asked(UNRULED)) == 2  # the call in flight, asked again by the new router
    assert len(model.specialists_asked(UNRULED)) == 2  # once per specialist: the task was routed once


def test_a_task_canceled_while_it_was_classified_stays_canceled_after_a_kill(bootstrap: str, tmp_path: Path) -> None:
    """An open task whose route the model is still deciding is canceled: the router drops it
    and publishes CANCELED itself. Killed before the next checkpoint, the router leaves the
    session's record with the task open and undecided in its changelog; the next router
    would decide and route it again (a second result to come), but reads its predecessor's
    CANCELED back at the assignment (router/own_results.py) and closes the task instead."""
    model = ModelSide()
    model.hold_route.set()
    task = new_task(UNRULED, f"c-{uuid.uuid4().hex[:8]}", "acme")
    # The first checkpoint after the task opened flushes its record; the next one comes
    # COMMIT_S later, after the kill (checked below: the changelog still has the task open).
    with LoopbackServer(model.answer).running() as server:
        stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_topology(tmp_path),
                             env={**openai_env(server), COMMIT_INTERVAL_ENV: str(COMMIT_S)})
        try:
            stack.start_all({"router": WORKERS["router"]})
            stack.submit([task])
            wait_for(lambda: bool(model.routes_asked(UNRULED)), 60, "the router's model call")
            _wait_for_changelog(stack, task["session_id"], 60)
            cancel = cancel_record(task["task_id"], task["session_id"], "acme", "ops", "late")
            send_cancel(bootstrap, stack.topology, SCHEMAS, cancel)
            first = stack.results({task["task_id"]}, timeout=30)
            stack.workers["router"].kill()
            stack.workers["router"].wait(10)
            model.release.set()
            records = latest_by_key(read_all(bootstrap, stack.topology.changelog_topic("router", "sessions")))
            kept = records[task["session_id"]]
            # The drop never landed: the changelog has the task open (and undecided).
            assert isinstance(kept, dict) and kept["open"]["task"]["task_id"] == task["task_id"], kept
            again = stack.start("router-b", *WORKERS["router"])
            again.wait_for_line(rf"task {task['task_id']} was answered CANCELED here before a restart; closed", 60)
            again.wait_for_line(rf"cancel of task {task['task_id']}: ", 60)  # read again too: ended
            again.stop()
            assert again.wait() == 0, again.tail()
            after = stack.results({task["task_id"]}, timeout=30)
        finally:
            model.release.set()
            stack.stop_all()
    assert [r["status"] for r in first[task["task_id"]]] == ["CANCELED"], first
    assert [r["status"] for r in after[task["task_id"]]] == ["CANCELED"], after
    assert len(model.routes_asked(UNRULED)) == 1  # not classified again, so never routed


def kill_and_restart(stack: DurableStack, name: str, release: threading.Event, assigned: str) -> None:
    """SIGKILL worker ``name`` while its model call is held, let that call end with nobody
    waiting for it (``release``), and start the worker again until ``assigned`` is logged."""
    stack.workers[name].kill()
    stack.workers[name].wait(10)
    release.set()
    stack.start(name, *WORKERS[name]).wait_for_line(assigned, 60)


def _routed_details(stack: DurableStack, wanted: set[str]) -> dict[str, str]:
    """The detail of each wanted task's ROUTED event, from the task events topic."""
    return task_event_details(stack, wanted, "ROUTED")


def task_event_details(stack: DurableStack, wanted: set[str], kind: str, stage: str | None = None) -> dict[str, str]:
    """The detail of each wanted task's event of ``kind`` (from ``stage``: any when None),
    from the task events topic."""
    schemas = SchemaSet.load()
    topic = stack.topology.topic("task_events")
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"e-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(stack.topology.topic_spec("task_events").partitions)])
    found: dict[str, str] = {}
    deadline = time.monotonic() + 30
    try:
        while set(found) != wanted and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            value = None if msg is None or msg.error() is not None else msg.value()
            if value is None:
                continue
            event = schemas.decode_as(TASK_EVENT, value)
            if event["task_id"] in wanted and event["kind"] == kind and stage in (None, event["stage"]):
                found[event["task_id"]] = event["detail"]
    finally:
        consumer.close()
    assert set(found) == wanted, f"{kind} events found for {sorted(found)} of {sorted(wanted)}"
    return found


def _wait_for_changelog(stack: DurableStack, session_id: str, timeout: float) -> None:
    """Until the router's sessions changelog holds a record of ``session_id``."""
    wait_for_key(stack, stack.topology.changelog_topic("router", "sessions"), session_id, timeout)


def wait_for_key(stack: DurableStack, topic: str, key: str, timeout: float) -> None:
    """Until ``topic`` (a changelog of a per-session table) holds a record keyed ``key``."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"c-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(stack.topology.topic_spec("tasks").partitions)])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None and msg.key() == key.encode():
                return
    finally:
        consumer.close()
    raise AssertionError(f"no record keyed {key} in {topic} within {timeout:.0f} s")
