"""A rejected task the router reads again gets no second result.

The router reads a task again when its offset was not committed, as after a broker stall
that cost it its group membership (a CI run's fuzz test on Tansu: "Consumer group session
timed out", then the partitions back 13 s later and every record since the last commit read
again). Here the re-read is made on purpose: the router stops, its group's committed
offsets on the tasks topic are set back to 0, and it starts again.

A task whose id is usable is known again by its id (its dedupe mark). One whose id is not
(a control character: no table may be keyed by it) is known by its place on the tasks
topic (router/decide.py unusable_id_key); before that, it was rejected once per read.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from agentstream.client import new_task

from .test_durable import DurableStack


def _rewind(stack: DurableStack) -> None:
    """Set the router group's committed offsets on the tasks topic back to 0 (the group is empty)."""
    topic = stack.topology.topic("tasks")
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": stack.topology.group("router"),
                         "enable.auto.commit": False})
    try:
        partitions = range(stack.topology.topic_spec("tasks").partitions)
        consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in partitions], asynchronous=False)
    finally:
        consumer.close()


def test_rejected_tasks_read_again_get_no_second_result(bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    control = new_task("Where is my refund?", f"s-{run}", "acme", task_id=f"bad\x00{run}")  # an unusable id
    sessionless = new_task("Where is my refund?", "", "acme", task_id=f"nosession-{run}")  # a usable id
    tasks = {control["task_id"]: r"bad.?" + run, sessionless["task_id"]: f"nosession-{run}"}
    stack = DurableStack(bootstrap, tmp_path, latency="0")
    try:
        stack.start("router", "router").wait_for_line(r": assigned ", 60)
        stack.submit([control, sessionless])
        first = stack.results(set(tasks), timeout=60)
        assert {task_id: [r["status"] for r in got] for task_id, got in first.items()} == {
            task_id: ["REJECTED"] for task_id in tasks}, first
        stack.workers["router"].stop()
        assert stack.workers["router"].wait() == 0
        _rewind(stack)
        again = stack.start("router", "router")
        for shown in tasks.values():  # each read again, and answered one way or the other
            again.wait_for_line(rf"task {shown} (rejected:|was rejected before; repeat ignored)", 60)
        results = stack.results(set(tasks), timeout=30)
    finally:
        codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    assert {task_id: [r["status"] for r in got] for task_id, got in results.items()} == {
        task_id: ["REJECTED"] for task_id in tasks}, results
    assert again.matching(r"was rejected before; repeat ignored")
