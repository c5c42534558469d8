"""Durable execution: workers killed with SIGKILL (or stopped with SIGTERM) under load lose
no task, publish exactly one result per task, and repeat at most the model call that was
in flight. Every worker is a real process; the scripted model takes 0.5–2 s per call and
logs each call (task, step, pid) to a file shared by all workers."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from agentstream import jsoncodec
from agentstream.client import new_task
from agentstream.clients import admin_config, producer_config
from agentstream.router.session_gate import admit, new_record
from agentstream.serde import SchemaSet
from agentstream.topology import Topology, load_topology
from agentstream.topology_admin import apply

from .harness import WorkerProcess, wait_for

SCHEMAS = SchemaSet.load()


class DurableStack:
    """Router, billing specialists and supervisor processes under a unique prefix."""

    def __init__(self, bootstrap: str, base: Path, latency: str, topology_path: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.base = base
        self.prefix = f"d{uuid.uuid4().hex[:8]}"
        self.topology_path = topology_path
        self.extra_env = env or {}
        self.topology: Topology = load_topology(topology_path, prefix=self.prefix)
        apply(AdminClient(admin_config(bootstrap)), self.topology)
        self.call_log = base / "calls.log"
        self.call_log.touch()
        self.latency = latency
        self.workers: dict[str, WorkerProcess] = {}

    def env(self, name: str) -> dict[str, str]:
        """The environment of the process ``name``: the stack's broker, prefix and app, a state dir of its own."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "AGENTSTREAM_PREFIX": self.prefix,
            "AGENTSTREAM_STATE_DIR": str(self.base / name),
            "AGENTSTREAM_SCRIPTED_LATENCY": self.latency,
            "AGENTSTREAM_SCRIPTED_CALL_LOG": str(self.call_log),
            **({"AGENTSTREAM_TOPOLOGY": str(self.topology_path)} if self.topology_path else {}),
            **self.extra_env,
        }

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> WorkerProcess:
        """``agentstream worker <command>`` as the process ``name`` (``env`` added to the stack's)."""
        return self.run(name, "worker", *command, env=env)

    def run(self, name: str, *command: str, env: dict[str, str] | None = None) -> WorkerProcess:
        """``agentstream <command>`` as the long-running process ``name``."""
        worker = WorkerProcess(["-m", "agentstream", *command], name, {**self.env(name), **(env or {})})
        self.workers[name] = worker
        return worker

    def start_all(self, workers: dict[str, list[str]], timeout: float = 60) -> None:
        """Start every worker (name -> command) and wait until each has its partitions."""
        for name, command in workers.items():
            self.start(name, *command)
        for worker in self.workers.values():
            worker.wait_for_line(r": assigned ", timeout)

    def submit(self, tasks: list[dict[str, Any]]) -> None:
        producer = Producer(producer_config(self.bootstrap))
        for task in tasks:
            producer.produce(self.topology.topic("tasks"), SCHEMAS.encode("TaskSubmitted", task), task["session_id"])
        assert producer.flush(30) == 0

    def results(self, wanted: set[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
        """Every TaskResult of ``wanted`` tasks, read until all are in and the topic is quiet."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"r-{uuid.uuid4().hex}"})
        topic = self.topology.topic("results")
        consumer.assign([TopicPartition(topic, p, 0) for p in range(self.topology.topic_spec("results").partitions)])
        seen: dict[str, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + timeout
        quiet_after_all: float | None = None
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    record = SCHEMAS.decode_as("TaskResult", msg.value())
                    seen.setdefault(record["task_id"], []).append(record)
                    quiet_after_all = None
                if wanted <= set(seen):
                    # All in: read a little longer so a late duplicate would be caught too.
                    quiet_after_all = quiet_after_all or time.monotonic()
                    if time.monotonic() - quiet_after_all > 3.0:
                        return seen
        finally:
            consumer.close()
        missing = wanted - set(seen)
        raise AssertionError(f"{len(missing)} of {len(wanted)} tasks got no result within {timeout:.0f} s, e.g. {sorted(missing)[:3]}")

    def calls(self) -> list[tuple[str, int, int]]:
        rows = []
        for line in self.call_log.read_text().splitlines():
            task, step, pid = line.split()
            rows.append((task, int(step), int(pid)))
        return rows

    def stop_all(self) -> dict[str, int | None]:
        """Stop every worker; leave each one's log in the test's directory for a failure's reader."""
        for worker in self.workers.values():
            worker.terminate()
        try:
            return {name: worker.wait(60) for name, worker in self.workers.items()}
        finally:
            for name, worker in self.workers.items():
                worker.kill()  # one that outlived its wait must not run on into later tests
                worker.save_log(self.base / f"{name}.log")


def _tasks(count: int, sessions: int, agent: str = "billing") -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:6]
    return [
        new_task(f"Please check invoice INV-100{i % 4 + 1} for me", f"s-{run}-{i % sessions}", "it",
                 task_id=f"d-{run}-{i:03d}", requested_agent=agent)
        for i in range(count)
    ]


@pytest.mark.parametrize("victim_kind", ["specialist", "router", "supervisor"])
def test_sigkill_of_one_worker_loses_no_task_and_repeats_at_most_the_call_in_flight(
    bootstrap: str, tmp_path: Path, victim_kind: str
) -> None:
    stack = DurableStack(bootstrap, tmp_path, latency="0.5-2")
    commands = {"router": ["router"], "specialist": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]}
    for kind, command in commands.items():
        stack.start(f"{kind}-a", *command)
        if kind == victim_kind:
            stack.start(f"{kind}-b", *command)
    victim, survivor = stack.workers[f"{victim_kind}-a"], stack.workers[f"{victim_kind}-b"]
    try:
        for worker in stack.workers.values():
            worker.wait_for_line(r": assigned ", 60)
        wait_for(lambda: all(w.matching(r": assigned .*\[\d\]") for w in (victim, survivor)), 60, "both to own partitions")
        tasks = _tasks(200, sessions=60)
        stack.submit(tasks)
        if victim_kind == "specialist":
            wait_for(lambda: len({pid for _, _, pid in stack.calls()}) == 2 and len(stack.calls()) > 60, 60,
                     "both specialists to be calling the model")
        else:
            wait_for(lambda: len(stack.calls()) > 60, 60, "tasks to be flowing")
        mark = survivor.line_count()
        victim.kill()
        killed_at = time.monotonic()
        victim.wait(10)
        in_flight_on_victim = {t for t, _, pid in stack.calls() if pid == victim.proc.pid}
        resumed_line = survivor.wait_for_line(r"resuming task|: assigned ", 60, after=mark)
        recovery = time.monotonic() - killed_at
        results = stack.results({t["task_id"] for t in tasks}, timeout=180)
    finally:
        codes = stack.stop_all()
    assert codes[survivor.name] == 0, survivor.tail()
    duplicates = {task: len(got) for task, got in results.items() if len(got) != 1}
    assert not duplicates, f"tasks with more than one result: {duplicates}"
    assert all(got[0]["status"] == "COMPLETED" for got in results.values())
    calls = Counter((task, step) for task, step, _ in stack.calls())
    repeated = {key: n for key, n in calls.items() if n > 1}
    per_task = Counter(task for task, _ in repeated)
    assert all(n == 1 for n in per_task.values()), f"a task repeated more than one model call: {per_task}"
    assert set(per_task) <= in_flight_on_victim, "only tasks the killed worker had were repeated"
    assert all(n == 2 for n in repeated.values())
    print(f"\nSIGKILL {victim_kind}: 200 tasks, 0 lost, 0 duplicate results, {len(repeated)} model calls repeated "
          f"({len(in_flight_on_victim)} tasks had been on the victim); survivor took over in {recovery:.1f} s "
          f"({resumed_line.split(' ', 4)[-1][:60]})")


def test_sigterm_during_load_exits_zero_loses_nothing_and_repeats_nothing(bootstrap: str, tmp_path: Path) -> None:
    stack = DurableStack(bootstrap, tmp_path, latency="0.5-2")
    stack.start("router", "router")
    stack.start("supervisor", "supervisor")
    first = stack.start("billing-a", "specialist", "--type", "billing")
    second = stack.start("billing-b", "specialist", "--type", "billing")
    try:
        for worker in stack.workers.values():
            worker.wait_for_line(r": assigned ", 60)
        wait_for(lambda: all(w.matching(r": assigned .*\[\d\]") for w in (first, second)), 60, "both to own partitions")
        tasks = _tasks(120, sessions=40)
        stack.submit(tasks)
        wait_for(lambda: len({pid for _, _, pid in stack.calls()}) == 2 and len(stack.calls()) > 40, 60, "both busy")
        first.terminate()
        assert first.wait(60) == 0, first.tail()
        results = stack.results({t["task_id"] for t in tasks}, timeout=180)
    finally:
        codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    assert all(len(got) == 1 for got in results.values())
    calls = Counter((task, step) for task, step, _ in stack.calls())
    assert not [key for key, n in calls.items() if n > 1], "a graceful stop repeats no model call"


def test_tasks_whose_marks_outlived_their_sessions_record_all_run(bootstrap: str, tmp_path: Path) -> None:
    """The broker as a router killed mid-checkpoint leaves it: the dedupe marks of a
    session's three tasks reached the changelog, the session's record did not, and no
    offset was committed. A new router re-reads the three tasks: all three must run, in
    order (a fresh mark for the first once made the other two pass for repeats)."""
    stack = DurableStack(bootstrap, tmp_path, latency="0.05-0.2")
    run = uuid.uuid4().hex[:6]
    session = f"lost-{run}"
    tasks = [new_task(f"INV-1001 question {i}", session, "it", task_id=f"m-{run}-{i}", requested_agent="billing")
             for i in range(3)]
    stack.submit(tasks)
    partition, _ = _position_of(stack, "tasks", session)
    first_marks = int(time.time() * 1000) - 5_000
    for i, task in enumerate(tasks):  # as the router's checkpoint wrote them: jsoncodec ints, keyed by task id
        _produce_checked(bootstrap, stack.topology.changelog_topic("router", "dedupe"), task["task_id"],
                         jsoncodec.dumps(first_marks + i), partition)
    try:
        stack.start_all({"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]})
        results = stack.results({t["task_id"] for t in tasks}, timeout=90)
    finally:
        stack.stop_all()
    finished = sorted(tasks, key=lambda t: results[t["task_id"]][0]["completed_at"])
    assert [t["task_id"] for t in finished] == [t["task_id"] for t in tasks]
    assert all(len(got) == 1 and got[0]["status"] == "COMPLETED" for got in results.values())
    recovered = stack.workers["router"].matching(r"was seen but is missing from session")
    assert len(recovered) == 3, "\n".join(recovered)


def test_a_task_whose_record_outlived_its_mark_is_not_run_twice(bootstrap: str, tmp_path: Path) -> None:
    """The other order: a kill kept the session's record (t1 open, routed) and lost t1's
    dedupe mark. The new router re-reads t1 (before or after its result) and must know it
    for taken, and mark it again: otherwise t1, or a later copy of it (a client's retry),
    is opened again after its result and goes to a specialist that drops it as done, so
    no result comes and the session's next task waits for ever."""
    stack = DurableStack(bootstrap, tmp_path, latency="0.05-0.2")
    run = uuid.uuid4().hex[:6]
    session = f"kept-{run}"
    first, then = (new_task(f"INV-1001 question {i}", session, "it", task_id=f"k-{run}-{i}", requested_agent="billing")
                   for i in range(2))
    stack.submit([first])
    partition, offset = _position_of(stack, "tasks", session)
    record = new_record()  # as the router's checkpoint wrote it: t1 open and routed
    task = SCHEMAS.decode_as("TaskSubmitted", SCHEMAS.encode("TaskSubmitted", first))
    admit(record, {"task": task, "route": ["billing"], "tier": "simple", "by": "request"},
          stack.topology.sessions, int(time.time() * 1000), offset)
    _produce_checked(bootstrap, stack.topology.changelog_topic("router", "sessions"), session, jsoncodec.dumps(record), partition)
    try:
        stack.start_all({"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]})
        stack.results({first["task_id"]}, timeout=60)
        stack.submit([first, then])  # t1 again, as a client retrying would, then the session's next task
        results = stack.results({first["task_id"], then["task_id"]}, timeout=60)
    finally:
        stack.stop_all()
    assert {task_id: len(got) for task_id, got in results.items()} == {first["task_id"]: 1, then["task_id"]: 1}
    assert stack.workers["router"].matching(rf"task {first['task_id']} already routed, duplicate ignored")


def _produce_checked(bootstrap: str, topic: str, key: str, value: bytes, partition: int) -> None:
    producer, refused = Producer(producer_config(bootstrap)), []
    producer.produce(topic, value, key.encode(), partition=partition, on_delivery=lambda err, _: refused.append(err) if err else None)
    assert producer.flush(30) == 0 and not refused, refused


def _position_of(stack: DurableStack, logical_topic: str, key: str) -> tuple[int, int]:
    """The partition and offset of the key's first record (read back, not recomputed)."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"p-{uuid.uuid4().hex}"})
    topic = stack.topology.topic(logical_topic)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(stack.topology.topic_spec(logical_topic).partitions)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() == key.encode():
                return msg.partition(), msg.offset()
    finally:
        consumer.close()
    raise AssertionError(f"no record keyed {key!r} on {topic} within 30 s")


def test_a_sessions_tasks_complete_in_submission_order(bootstrap: str, tmp_path: Path) -> None:
    stack = DurableStack(bootstrap, tmp_path, latency="0.05-0.4")
    for name, command in {"router": ["router"], "billing": ["specialist", "--type", "billing"], "supervisor": ["supervisor"]}.items():
        stack.start(name, *command)
    run = uuid.uuid4().hex[:6]
    ordered = [new_task(f"INV-1001 question {i}", f"one-{run}", "it", task_id=f"o-{run}-{i:02d}", requested_agent="billing")
               for i in range(20)]
    others = _tasks(40, sessions=20)
    try:
        for worker in stack.workers.values():
            worker.wait_for_line(r": assigned ", 60)
        stack.submit([task for pair in zip(ordered, others[:20]) for task in pair] + others[20:])
        results = stack.results({t["task_id"] for t in ordered + others}, timeout=120)
    finally:
        stack.stop_all()
    finished = sorted(ordered, key=lambda t: results[t["task_id"]][0]["completed_at"])
    assert [t["task_id"] for t in finished] == [t["task_id"] for t in ordered]
    # Other sessions ran meanwhile: some of them finished before the ordered session did.
    last_ordered = max(results[t["task_id"]][0]["completed_at"] for t in ordered)
    assert sum(results[t["task_id"]][0]["completed_at"] < last_ordered for t in others) >= 20


def test_a_zombie_owners_late_checkpoint_does_not_roll_the_task_back(bootstrap: str, tmp_path: Path) -> None:
    """A (epoch 0) is killed mid-task; B resumes it (epoch 1); then a late epoch-0 step — as a
    zombie A would write it — lands in the changelog, B is killed, and C must ignore it."""
    import json

    from .harness import read_all

    stack = DurableStack(bootstrap, tmp_path, latency="2-2.5")
    stack.start("router", "router")
    stack.start("supervisor", "supervisor")
    a = stack.start("billing-a", "specialist", "--type", "billing")
    b = stack.start("billing-b", "specialist", "--type", "billing")
    session = f"z-{uuid.uuid4().hex[:6]}"
    task = new_task("I was charged twice on invoice INV-1002", session, "it", task_id=f"zombie-{uuid.uuid4().hex[:6]}",
                    requested_agent="billing")
    changelog = stack.topology.changelog_topic("billing", "checkpoints")
    try:
        for worker in stack.workers.values():
            worker.wait_for_line(r": assigned ", 60)
        wait_for(lambda: all(w.matching(r": assigned .*\[\d\]") for w in (a, b)), 60, "both to own partitions")
        stack.submit([task])
        wait_for(lambda: any(t == task["task_id"] and step == 1 for t, step, _ in stack.calls()), 60, "the second model call")
        owner = next(w for w in (a, b) if any(pid == w.proc.pid for _, _, pid in stack.calls()))
        other = b if owner is a else a
        owner.kill()
        owner.wait(10)
        # Steps 0 and 1 are the first reply and its turn's two lookups (read-only: one record,
        # which may not have landed yet when the kill comes during the second model call: the
        # resume is then at step 1). The zombie writes the first sequence number its epoch no
        # longer owns, as a late write of the killed owner would.
        resumed = other.wait_for_line(rf"resuming task {task['task_id']} at step [12]\b", 60)
        seq = int(resumed.rsplit(" ", 1)[-1])
        records = read_all(bootstrap, changelog)
        partition = next(p for key, _, p in records if key == f"t/{task['task_id']}".encode())
        zombie = {"epoch": 0, "seq": seq, "kind": "model", "step": 1, "text": "ZOMBIE ANSWER", "tool_calls": [],
                  "usage": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0}, "model": "zombie"}
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(changelog, json.dumps(zombie).encode(), f"s/{task['task_id']}/000000/{seq:06d}".encode(), partition)
        assert producer.flush(10) == 0
        other.kill()
        other.wait(10)
        stack.start("billing-c", "specialist", "--type", "billing")
        results = stack.results({task["task_id"]}, timeout=120)
    finally:
        stack.stop_all()
    [result] = results[task["task_id"]]
    assert result["status"] == "COMPLETED"
    assert "ZOMBIE" not in (result["output"] or ""), "the stale owner's step was replayed"
    assert "[scripted model]" in result["output"]
