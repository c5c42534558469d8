"""A task routed to the canary stays there when the weight drops and the router, killed
with SIGKILL, is replaced and sends its open tasks again: one version runs it, once."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from agentstream.events import ROUTED_TASK, SPECIALIST_RESULT

from .harness import committed_total, read_all, wait_for
from .test_durable import DurableStack
from .test_rollout import SCHEMAS, _app, _cli, _records, _tasks

SESSIONS = 6


def _routed(stack: DurableStack, topic: str, wanted: set[str]) -> Counter[str]:
    """How many routed records of the ``wanted`` tasks ``topic`` holds, per task."""
    found = (SCHEMAS.decode_as(ROUTED_TASK, value)["task_id"] for _, value, _ in read_all(stack.bootstrap, topic) if value)
    return Counter(task_id for task_id in found if task_id in wanted)


def _resent(stack: DurableStack, name: str) -> int:
    """Open session tasks the router ``name`` has sent again after its assignments."""
    lines = stack.workers[name].matching(r"sent \d+ open session tasks again after the assignment")
    return sum(int(line.split("sent ", 1)[1].split()[0]) for line in lines)


def test_an_open_canary_task_is_sent_again_to_the_canary_after_a_weight_change_and_a_router_kill(
    bootstrap: str, tmp_path: Path,
) -> None:
    stack = DurableStack(bootstrap, tmp_path, latency="0", topology_path=_app(tmp_path, {"mode": "canary", "weight": 1.0}))
    live_topic, canary_topic = stack.topology.specialist_topic("billing"), stack.topology.candidate_topic("billing")
    try:
        # No candidate worker yet: the tasks routed to it stay open across the weight change and the kill.
        stack.start_all({"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]})
        run_id = uuid.uuid4().hex[:6]
        tasks = _tasks([f"s-{run_id}-{n}" for n in range(SESSIONS)], 1)
        wanted = {t["task_id"] for t in tasks}
        stack.submit(tasks)
        wait_for(lambda: len(_routed(stack, canary_topic, wanted)) == SESSIONS, 60, "every task routed to the canary")
        # The session records (with their pins) reach the changelog before the offsets are committed.
        router_group, tasks_topic = stack.topology.group("router"), stack.topology.topic("tasks")
        wait_for(lambda: committed_total(bootstrap, router_group, tasks_topic) >= SESSIONS, 60, "the router's checkpoint")
        _cli(stack, "set-weight", "billing", "0", "--reason", "back to live", "--who", "ops")
        stack.workers["router"].wait_for_line(r"rollout: billing canary weight is now 0 \(back to live, by ops\)", 60)
        stack.workers["router"].kill()
        assert stack.workers["router"].wait(30) == -9
        # A new router with no local state: it restores the sessions from the changelog and sends the open tasks again.
        stack.start("router-2", "router")
        wait_for(lambda: _resent(stack, "router-2") >= SESSIONS, 120, "the open tasks sent again")
        stack.start("billing.candidate", "specialist", "--type", "billing.candidate")
        results = stack.results(wanted, timeout=120)
        assert all(len(found) == 1 and found[0]["status"] == "COMPLETED" for found in results.values()), results
        # Sent twice (before and after the kill), both times to the canary; never to live.
        assert _routed(stack, canary_topic, wanted) == {task_id: 2 for task_id in wanted}
        assert _routed(stack, live_topic, wanted) == Counter()
        ran = Counter((r["task_id"], r["variant"]) for r in _records(stack, "supervisor", SPECIALIST_RESULT) if r["task_id"] in wanted)
        assert ran == {(task_id, "candidate"): 1 for task_id in wanted}, "each task ran once, on the canary only"
    finally:
        stack.stop_all()
