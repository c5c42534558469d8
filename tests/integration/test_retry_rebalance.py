"""A retry tier partition that a worker held, lost to a new member of its group and got
back is fetched again.

librdkafka keeps an application pause across a revoke and a later assignment of the same
partition to the same member. Before ``DueHolds.resume_assigned``, a billing worker that got
back a partition it had held (paused until its head was due) never fetched it again, and
the retries waiting there waited for the worker's restart.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import yaml
from agentstream.client import new_task
from agentstream.runtime.lag import end_offsets
from agentstream.settings import SCRIPTED_FAULTS_ENV

from tests import support_desk

from .harness import wait_for
from .test_durable import DurableStack

TASKS = 24  # over 6 partitions: the second member's half of them surely holds some
FIRST_DELAY_S = 60.0  # outlasts the second member's start, its half taken and given back (~30 s on a loaded Tansu)


def _stack(bootstrap: str, base: Path) -> DurableStack:
    topology = yaml.safe_load((support_desk.APP / "topology.yaml").read_text())
    topology["retry"] = {"delays_s": [FIRST_DELAY_S, 1.0, 1.0], "max_attempts": 4}
    topology["agents"]["billing"]["controls"] = {"retry": {"max_attempts": 1}, "breaker": {"failure_threshold": 1000}}
    path = support_desk.copy_app(base)
    path.write_text(yaml.safe_dump(topology))
    return DurableStack(bootstrap, base, latency="0", topology_path=path, env={SCRIPTED_FAULTS_ENV: "1"})


def _partitions(line: str, topic: str) -> set[int]:
    return {int(p) for p in re.findall(re.escape(topic) + r"\[(\d+)\]", line)}


def test_a_held_tier_partition_given_back_after_a_rebalance_is_fetched_again(bootstrap: str, tmp_path: Path) -> None:
    stack = _stack(bootstrap, tmp_path)
    tier = stack.topology.retry_topics(stack.topology.agents["billing"].input)[0]
    try:
        stack.start_all({"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]})
        billing = stack.workers["billing"]
        run = uuid.uuid4().hex[:6]
        tasks = [new_task(f"Check invoice INV-100{i % 4 + 1} #fail-transient=1", f"rb-{run}-{i}", "it",
                          task_id=f"rb-{run}-{i:02d}", requested_agent="billing") for i in range(TASKS)]
        stack.submit(tasks)
        ends: dict[tuple[str, int], int] = {}

        def all_failed_once() -> bool:
            ends.update(end_offsets(bootstrap, [tier]))
            return sum(ends.values()) >= TASKS

        wait_for(all_failed_once, 60, f"the {TASKS} tasks' first failures in {tier}")
        failed_at = time.monotonic()
        used = {p for (_, p), end in ends.items() if end > 0}
        held: set[int] = set()
        for partition in sorted(used):
            held |= _partitions(billing.wait_for_line(rf"holding {re.escape(tier)}\[{partition}\]", 60), tier)
        second = stack.start("billing-2", "specialist", "--type", "billing")
        taken = _partitions(second.wait_for_line(r": assigned .*" + re.escape(tier), 60), tier)
        lost_while_held = taken & held
        assert lost_while_held, (taken, held)
        mark = billing.line_count()
        second.terminate()
        assert second.wait(60) == 0
        for partition in sorted(lost_while_held):
            billing.wait_for_line(rf": assigned .*{re.escape(tier)}\[{partition}\]", 60, after=mark)
        given_back_after = time.monotonic() - failed_at
        # Later, the heads would be due (or due within a second, a hold logged at DEBUG only).
        assert given_back_after < FIRST_DELAY_S - 5, \
            f"given back {given_back_after:.0f} s after the failures: too late to see the holds again"
        for partition in sorted(lost_while_held):
            # Fetched again: its head, still not due, is held again (never, with the pause kept).
            billing.wait_for_line(rf"holding {re.escape(tier)}\[{partition}\]", 20, after=mark)
        results = stack.results({t["task_id"] for t in tasks}, FIRST_DELAY_S + 60)
        assert all([r["status"] for r in results[t["task_id"]]] == ["COMPLETED"] for t in tasks), results
    finally:
        codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
