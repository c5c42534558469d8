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

import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from agentstream.cancellation import cancel_record, send_cancel
from agentstream.client import new_task
from agentstream.clients import producer_config
from agentstream.retry.dlq_ops import DeadLetterQueue
from agentstream.serde import SchemaSet

from .harness import wait_for
from .test_durable import DurableStack

SCHEMAS = SchemaSet.load()
# Copies of a task ahead of the invalid ones in test_answers_read_back_stand_after_a_second_hand_over:
# router C must commit the results topic before it has read them all. Alone, C had read 11k
# (Kafka) and 22k (Tansu) of 60k by then; under `make test`'s parallel files it once read all
# 60k first (session 37), so the backlog is larger than that by a margin.
BACKLOG = 200_000


def _rewind(stack: DurableStack, topic_name: str = "tasks") -> None:
    """Set the router group's committed offsets on a topic back to 0 (the group is empty)."""
    topic = stack.topology.topic(topic_name)
    consumer = _group_probe(stack)
    try:
        partitions = range(stack.topology.topic_spec(topic_name).partitions)
        consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in partitions], asynchronous=False)
    finally:
        consumer.close()


def _group_probe(stack: DurableStack) -> Consumer:
    """A consumer that asks or sets the router group's committed offsets (it never joins the group)."""
    return Consumer({"bootstrap.servers": stack.bootstrap, "group.id": stack.topology.group("router"),
                     "enable.auto.commit": False})


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


def _answers(results: dict[str, list[dict[str, Any]]], task_id: str) -> list[tuple[str, str]]:
    return [(r["status"], (r["error"] or {}).get("code")) for r in results.get(task_id, [])]


def _submit_elsewhere(stack: DurableStack, task: dict[str, Any], home: dict[str, tuple[int, int]]) -> int:
    """Write ``task`` keyed by another key than its session, to a partition other than the
    session's (``home``: where a task of its session is); that partition."""
    (session_partition, _), = home.values()
    away = (session_partition + 1) % stack.topology.topic_spec("tasks").partitions
    producer = Producer(producer_config(stack.bootstrap))
    producer.produce(stack.topology.topic("tasks"), SCHEMAS.encode("TaskSubmitted", task), b"not-its-session", partition=away)
    assert producer.flush(30) == 0
    return away


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
    # Ids no table may be keyed by: their answers are found by a digest of the ids, and
    # two tasks with the same blank id by how many answers they have (own_results.py).
    unusable = new_task("Where is my refund?", session, "acme", task_id=f"ctl\x01{run}")
    blanks = [new_task(f"blank {i}", session, "acme", task_id="   ") for i in range(2)]
    # Keyed by something else than its session, on another partition: refused there.
    elsewhere = new_task("   ", session, "acme", task_id=f"elsewhere-{run}")
    canceled = queue[5]
    wanted = {committed["task_id"]: ("REJECTED", "INVALID_TASK"), invalid["task_id"]: ("REJECTED", "INVALID_TASK"),
              unusable["task_id"]: ("REJECTED", "INVALID_TASK"), elsewhere["task_id"]: ("REJECTED", "INVALID_TASK"),
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
        stack.submit([*queue, *busy, unusable, *blanks, invalid])
        away = _submit_elsewhere(stack, elsewhere, _positions(stack, "tasks", "TaskSubmitted", {committed["task_id"]}))
        second.wait_for_line(rf"task {busy[-1]['task_id']} rejected:", 60)  # the queue is in before it: q5 waits
        cancel = cancel_record(canceled["task_id"], session, "acme", "ops", "test")
        send_cancel(bootstrap, stack.topology, SCHEMAS, cancel)
        before = stack.results(set(wanted) | {"   "}, timeout=60)
        _one_result_each(before, wanted)
        assert _answers(before, "   ") == [("REJECTED", "INVALID_TASK")] * 2, before.get("   ")
        second.kill()
        second.wait()

        third = stack.start("router-c", "router")  # another host: nothing restored but the changelogs
        # The invalid task is the partition's last, the cancel its control record: both read
        # again (answered one way or another) means every task and the cancel were.
        third.wait_for_line(rf"task {invalid['task_id']} (was answered|rejected:)", 60)
        third.wait_for_line(rf"cancel of task {canceled['task_id']}: ", 60)
        third.wait_for_line(rf"task {elsewhere['task_id']} (was answered|rejected:)", 60)
        # A new task with a blank id, after the copies read again took their answers: its own.
        stack.submit([new_task("blank, later", session, "acme", task_id="   ")])
        third.wait_for_line(r"task {5}rejected: ", 60)  # "task " + "   " + " rejected"
        third.stop()
        assert third.wait() == 0, third.tail()
        after = stack.results(set(wanted) | {"   "}, timeout=30)
        letters = DeadLetterQueue(bootstrap, stack.topology.topic("dlq"), SCHEMAS).letters()
    finally:
        stack.stop_all()
    _one_result_each(after, wanted)
    assert _answers(after, "   ") == [("REJECTED", "INVALID_TASK")] * 3, after.get("   ")  # the later one's, no copy's
    assert third.matching(r"results the router published after its last commit read back")
    # Not decided again: a busy task admitted now (q5's place is free) would be routed
    # later and get a second result; the canceled one may also meet its result read back first.
    # Its result is on the partition it was read from, where the answers are read back.
    assert _positions(stack, "results", "TaskResult", {elsewhere["task_id"]})[elsewhere["task_id"]][0] == away
    for task in (invalid, elsewhere, *busy):
        assert third.matching(rf"task {task['task_id']} was answered REJECTED here before a restart"), task["task_id"]
    assert third.matching(rf"task ctl.?{run} was answered REJECTED here before a restart")
    assert len(third.matching(r"task {5}was answered REJECTED here before a restart")) == 2  # "task " + "   " + " was"
    assert third.matching(rf"task {canceled['task_id']} (was answered CANCELED here|has its result already)")
    # The invalid tasks' dead letters, as the DLQ shows them: one each (the one read again
    # was sent again under its id, its source position, in case only its result had landed).
    dead = sorted(letter["task_id"] for letter in letters)
    assert dead == sorted([committed["task_id"], invalid["task_id"], unusable["task_id"], elsewhere["task_id"], *["   "] * 3]), \
        letters


def _positions(stack: DurableStack, topic_name: str, schema: str, wanted: set[str]) -> dict[str, tuple[int, int]]:
    """Where each of ``wanted`` task ids is on a topic of the stack: task id -> (partition, offset)."""
    topic = stack.topology.topic(topic_name)
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"p-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(stack.topology.topic_spec(topic_name).partitions)])
    found: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + 60
    try:
        while not wanted <= set(found) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                task_id = SCHEMAS.decode_as(schema, msg.value())["task_id"]
                if task_id in wanted:
                    found[task_id] = (msg.partition(), msg.offset())
    finally:
        consumer.close()
    assert wanted <= set(found), f"not on {topic}: {sorted(wanted - set(found))}"
    return found


def _committed(probe: Consumer, stack: DurableStack, topic_name: str) -> dict[int, int]:
    """The router group's committed offset on each partition of a topic (-1001: none)."""
    topic = stack.topology.topic(topic_name)
    partitions = [TopicPartition(topic, p) for p in range(stack.topology.topic_spec(topic_name).partitions)]
    return {tp.partition: tp.offset for tp in probe.committed(partitions, timeout=30)}


def test_answers_read_back_stand_after_a_second_hand_over(bootstrap: str, tmp_path: Path) -> None:
    """Router B answers invalid tasks and is killed before its checkpoint. C reads B's answers
    back into its dedupe table, commits the results topic past them, and stops before it has
    read those tasks again (a backlog is ahead of them). D, on another host, finds nothing
    to read back past C's commit: only the table's changelog tells it the tasks were
    answered. Each keeps its one REJECTED."""
    run = uuid.uuid4().hex[:8]
    stack = DurableStack(bootstrap, tmp_path, latency="0", env={"AGENTSTREAM_COMMIT_INTERVAL_S": "600"})
    # Copies of one task, ahead of the invalid ones on their partition (one session): the
    # first is routed (to a specialist that does not run here), the others are ignored
    # without a write, so a checkpoint (C's every 0.1 s) finds the producer idle and
    # commits before C reaches the invalid tasks.
    session = f"s-{run}"
    backlog = [new_task("question", session, "acme", task_id=f"copied-{run}")] * BACKLOG
    invalid = [new_task("   ", session, "acme", task_id=f"invalid{i}-{run}") for i in range(3)]
    wanted = {task["task_id"]: ("REJECTED", "INVALID_TASK") for task in invalid}
    try:
        b = stack.start("router-b", "router")
        b.wait_for_line(r": assigned ", 60)
        submitted = [*backlog, *invalid]
        for start in range(0, len(submitted), 50_000):  # in order, each within a producer's queue
            stack.submit(submitted[start:start + 50_000])
        _one_result_each(stack.results(set(wanted), timeout=180), wanted)
        b.kill()
        b.wait()
        answered = _positions(stack, "results", "TaskResult", set(wanted))

        probe = _group_probe(stack)
        try:
            c = stack.start("router-c", "router", env={"AGENTSTREAM_COMMIT_INTERVAL_S": "0.1"})
            c.wait_for_line(r"results the router published after its last commit read back", 60)
            wait_for(lambda: all(_committed(probe, stack, "results")[p] > offset for p, offset in answered.values()),
                     60, "router C to commit the results topic past B's answers", interval=0.01)
            c.stop()
            assert c.wait() == 0, c.tail()
            tasks_committed = _committed(probe, stack, "tasks")
        finally:
            probe.close()
        # What the test is about: C did not read the invalid tasks again (else the backlog
        # was too short for this machine: C used the answers itself).
        assert not c.matching(r"was answered REJECTED here"), c.tail()
        for task_id, (partition, offset) in _positions(stack, "tasks", "TaskSubmitted", set(wanted)).items():
            assert 0 <= tasks_committed[partition] <= offset, (task_id, partition, offset, tasks_committed)

        d = stack.start("router-d", "router")  # another host: nothing restored but the changelogs
        for task in invalid:
            d.wait_for_line(rf"task {task['task_id']} (was answered|rejected:)", 180)
        d.stop()
        assert d.wait() == 0, d.tail()
        after = stack.results(set(wanted), timeout=30)
    finally:
        stack.stop_all()
    _one_result_each(after, wanted)
    assert not d.matching(r"read back"), "D found answers past C's commit: the test did not reach its case"
    for task in invalid:
        assert d.matching(rf"task {task['task_id']} was answered REJECTED here before a restart"), task["task_id"]


def test_a_replayed_task_is_decided_again_though_its_answer_was_read_back(bootstrap: str, tmp_path: Path) -> None:
    """A checkpoint may commit a task's offset but not yet its result's (the router had not
    read its own result back from the results topic): the next owner reads that answer back
    and keeps it, though the task is not read again. An operator's replay of the task (its
    dead letter) is a request to decide it again: the answer kept must not swallow it."""
    run = uuid.uuid4().hex[:8]
    stack = DurableStack(bootstrap, tmp_path, latency="0")
    invalid = new_task("   ", f"s-{run}", "acme", task_id=f"invalid-{run}")
    task_id = invalid["task_id"]
    dlq = DeadLetterQueue(bootstrap, stack.topology.topic("dlq"), SCHEMAS)
    try:
        first = stack.start("router-a", "router")
        first.wait_for_line(r": assigned ", 60)
        stack.submit([invalid])
        _one_result_each(stack.results({task_id}, timeout=60), {task_id: ("REJECTED", "INVALID_TASK")})
        first.stop()
        assert first.wait() == 0, first.tail()  # its stop commits the task
        _rewind(stack, "results")  # as if that commit had come before the router read its result back

        second = stack.start("router-b", "router")
        second.wait_for_line(r"results the router published after its last commit read back", 60)
        second.wait_for_line(r": assigned ", 60)
        letters = [letter for letter in dlq.letters() if letter["task_id"] == task_id]
        assert len(letters) == 1, letters
        dlq.replay(letters)
        second.wait_for_line(rf"task {task_id} (rejected:|was answered)", 60)
        results = stack.results({task_id}, timeout=30)
    finally:
        stack.stop_all()
    # The replay's decision (the task is still invalid) is a result of its own.
    assert [(r["status"], (r["error"] or {}).get("code")) for r in results[task_id]] == [
        ("REJECTED", "INVALID_TASK")] * 2, results
    assert second.matching(rf"task {task_id} rejected:")
    assert not second.matching(rf"task {task_id} was answered")
