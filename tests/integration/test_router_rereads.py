"""A task the router answered itself and reads again gets no second result.

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
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from agentstream.cancellation import cancel_record, send_cancel
from agentstream.client import new_task
from agentstream.retry.dlq_ops import DeadLetterQueue
from agentstream.serde import SchemaSet

from .test_durable import DurableStack

SCHEMAS = SchemaSet.load()


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


def _one_result_each(results: dict[str, list[dict[str, Any]]], wanted: dict[str, tuple[str, str]]) -> None:
    """Each of ``wanted`` (task id -> status and error code) has that one result, no second."""
    got = {task_id: [(r["status"], (r["error"] or {}).get("code")) for r in results.get(task_id, [])]
           for task_id in wanted}
    assert got == {task_id: [answer] for task_id, answer in wanted.items()}, got


def test_answers_of_a_killed_router_stand_when_its_tasks_are_read_again(bootstrap: str, tmp_path: Path) -> None:
    """The router answers tasks itself: REJECTED (invalid, or its session full) and CANCELED
    (dropped while it waited). Those results go out at once, the state that knows them at
    the next checkpoint. Killed with -9 before it, the router leaves its tasks uncommitted;
    a new owner with no local state reads them (and the cancel) again, after reading its
    predecessor's own results back (router/own_results.py): each keeps its one result."""
    run = uuid.uuid4().hex[:8]
    session = f"s-{run}"
    # No periodic checkpoint in the test's time: only a clean stop commits.
    stack = DurableStack(bootstrap, tmp_path, latency="0", env={"AGENTSTREAM_COMMIT_INTERVAL_S": "600"})
    committed = new_task("   ", session, "acme", task_id=f"committed-{run}")  # answered before the last commit
    # One open, 100 waiting (the default sessions.max_waiting): the next two are refused.
    queue = [new_task(f"question {i}", session, "acme", task_id=f"q{i}-{run}") for i in range(101)]
    busy = [new_task("one too many", session, "acme", task_id=f"busy{i}-{run}") for i in range(2)]
    invalid = new_task("   ", session, "acme", task_id=f"invalid-{run}")
    canceled = queue[5]
    wanted = {committed["task_id"]: ("REJECTED", "INVALID_TASK"), invalid["task_id"]: ("REJECTED", "INVALID_TASK"),
              **{task["task_id"]: ("REJECTED", "SESSION_BUSY") for task in busy},
              canceled["task_id"]: ("CANCELED", "CANCELED")}
    try:
        first = stack.start("router-a", "router")
        first.wait_for_line(r": assigned ", 60)
        stack.submit([committed])
        stack.results({committed["task_id"]}, timeout=60)
        first.stop()
        assert first.wait() == 0, first.tail()  # its stop commits: the next owner starts after this task

        second = stack.start("router-b", "router")
        second.wait_for_line(r": assigned ", 60)
        stack.submit([*queue, *busy, invalid])
        second.wait_for_line(rf"task {busy[-1]['task_id']} rejected:", 60)  # the queue is in before it: q5 waits
        cancel = cancel_record(canceled["task_id"], session, "acme", "ops", "test")
        send_cancel(bootstrap, stack.topology, SCHEMAS, cancel)
        before = stack.results(set(wanted), timeout=60)
        _one_result_each(before, wanted)
        second.kill()
        second.wait()

        third = stack.start("router-c", "router")  # another host: nothing restored but the changelogs
        # The invalid task is the partition's last, the cancel its control record: both read
        # again (answered one way or another) means every task and the cancel were.
        third.wait_for_line(rf"task {invalid['task_id']} (was answered|rejected:)", 60)
        third.wait_for_line(rf"cancel of task {canceled['task_id']}: ", 60)
        third.stop()
        assert third.wait() == 0, third.tail()
        after = stack.results(set(wanted), timeout=30)
        letters = DeadLetterQueue(bootstrap, stack.topology.topic("dlq"), SCHEMAS).letters()
    finally:
        stack.stop_all()
    _one_result_each(after, wanted)
    assert third.matching(r"results the router published after its last commit read back")
    # Not decided again: a busy task admitted now (q5's place is free) would be routed
    # later and get a second result; the canceled one may also meet its result read back first.
    for task in (invalid, *busy):
        assert third.matching(rf"task {task['task_id']} was answered REJECTED here before a restart"), task["task_id"]
    assert third.matching(rf"task {canceled['task_id']} (was answered CANCELED here|has its result already)")
    # The invalid tasks' dead letters, as the DLQ shows them: one each (the one read again
    # was sent again under its id, its source position, in case only its result had landed).
    dead = sorted(letter["task_id"] for letter in letters)
    assert dead == sorted([committed["task_id"], invalid["task_id"]]), letters
