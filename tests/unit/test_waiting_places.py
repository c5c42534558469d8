"""What a task waiting for approval holds in memory, without Kafka: no session place
unless a later task of the session already waits behind it, no entry in the waiting
gauge (a count), and nothing read beyond its keys and markers when a worker takes its
partition (bench/waiting_memory.py measures the same in a real worker)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

from agentstream.approvals.gate import AwaitingApproval
from agentstream.approvals.records import PendingCall, approval_id
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.lifecycle import DONE, WAITING, TaskLifecycle
from agentstream.specialist.waiting import ApprovalDesk, approval_key, session_key, waiting_key
from tests.unit.checkpoint_store import MemoryPartition

SESSION = "s/1"  # a "/" in a session id: its entries are told from those of session "s"


class _Processor:
    """Partition 0 only: its writes land in the store at once, spawned work is kept unrun."""

    def __init__(self, store: MemoryPartition) -> None:
        self.store = store
        self.spawned: list[Coroutine[Any, Any, None]] = []

    def assigned_partitions(self) -> set[int]:
        return {0}

    async def persist(self, table: object, key: str, value: Any, partition: int | None = None) -> None:
        self.store.put(key, value)

    async def persist_all(self, table: object, items: list[tuple[str, Any]], partition: int) -> None:
        for key, value in items:
            self.store.put(key, value)

    async def send_acked(self, topic: str, value: bytes, key: str) -> None:
        return None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.spawned.append(work)

    def spawn_resumed(self, work: Coroutine[Any, Any, None], topic: str, partition: int) -> None:
        self.spawned.append(work)

    def close_spawned(self) -> None:
        for work in self.spawned:
            work.close()


def _stack(store: MemoryPartition | None = None) -> tuple[TaskLifecycle, ApprovalDesk, MemoryPartition, _Processor]:
    """A lifecycle and its desk on ``store`` (a worker restarted on it), else a new one."""
    store = store or MemoryPartition()
    processor = _Processor(store)
    service = SimpleNamespace(
        topology=SimpleNamespace(topic=lambda name: name, topics={}), processor=processor, input_topic="in",
        agent="billing", schemas=SimpleNamespace(encode=lambda schema, record: b""), progress=lambda *args: None,
    )
    checkpoints = SimpleNamespace(partition=lambda partition: store)
    desk = ApprovalDesk(service, "billing", {}, lambda name: "", checkpoints)  # type: ignore[arg-type]
    lifecycle = TaskLifecycle(service, SimpleNamespace(agent_type="billing"), checkpoints, checkpoints, desk)  # type: ignore[arg-type]
    return lifecycle, desk, store, processor


def _task(task_id: str, session: str = SESSION) -> dict[str, Any]:
    return {"task_id": task_id, "session_id": session, "tenant_id": "acme", "input": "Please refund INV-1"}


def _held() -> AwaitingApproval:
    return AwaitingApproval([PendingCall(0, 0, "refund_invoice", {"invoice_id": "INV-1"}, "", 86_400, "deny")])


async def _wait(lifecycle: TaskLifecycle, desk: ApprovalDesk, store: MemoryPartition, task: dict[str, Any]) -> asyncio.Future[None]:
    """``task``'s loop as the lifecycle runs it up to a held call: its place, its head, the
    recorded wait. Its place, not handed on yet."""
    run = ckpt.run_id(task)
    lifecycle.looping.add(run)
    _, mine = lifecycle._place(run, task["session_id"], 0)
    store.put(ckpt.head_key(run), {"task": task, "epochs": [[0, 0]]})
    await desk.wait(task, _held(), 0)
    return mine


async def _held_loop() -> tuple[TaskLifecycle, MemoryPartition, _Processor, dict[str, Any], asyncio.Future[None]]:
    """A new worker with task r's loop at its held call (its place not handed on yet)."""
    lifecycle, desk, store, processor = _stack()
    task = _task("r")
    return lifecycle, store, processor, task, await _wait(lifecycle, desk, store, task)


def _decide(store: MemoryPartition, run: str) -> None:
    """Every approval of ``run`` decided and its wait ended, as the desk leaves it."""
    ident = approval_id("billing", run, 0, 0)
    store.put(approval_key(ident), {**store.value(approval_key(ident)), "status": "deny"})
    store.put(waiting_key(run), None)


def test_a_wait_nothing_follows_holds_no_place_and_the_next_task_of_its_session_queues_behind_it() -> None:
    async def main() -> None:
        lifecycle, store, processor, waiting, mine = await _held_loop()
        lifecycle._leave_or_keep(waiting, mine, WAITING)
        assert not lifecycle.places.holds("r") and not lifecycle.places.has_places(SESSION)
        assert not lifecycle.looping and lifecycle.desk is not None and lifecycle.desk._waiting == {0: 1}

        previous, _ = lifecycle._place("t", SESSION, 0)  # the session's next task comes
        assert lifecycle.places.holds("r"), "the waiting run takes its place back from the checkpoints"
        assert previous is not None and not previous.done()
        other, _ = lifecycle._place("u", "s", 0)  # another session: not behind it
        assert other is None

        _decide(store, "r")
        lifecycle.resume_decided(store.value(ckpt.head_key("r")), 0)
        resumed = processor.spawned[-1]
        assert resumed.cr_frame.f_locals["previous"] is None and resumed.cr_frame.f_locals["mine"] is previous
        lifecycle._leave_or_keep(waiting, previous, DONE)
        assert previous.done(), "the next task goes once the decided one ends"
        processor.close_spawned()

    asyncio.run(main())


def test_a_wait_with_a_task_queued_behind_it_keeps_its_place() -> None:
    async def main() -> None:
        lifecycle, _, processor, waiting, mine = await _held_loop()
        previous, _ = lifecycle._place("t", SESSION, 0)  # queued while r's loop still ran
        lifecycle._leave_or_keep(waiting, mine, WAITING)
        assert previous is mine and lifecycle.places.holds("r") and not mine.done()
        processor.close_spawned()

    asyncio.run(main())


def test_a_decision_before_the_loop_handed_its_place_on_resumes_the_task_after() -> None:
    async def main() -> None:
        lifecycle, store, processor, waiting, mine = await _held_loop()
        _decide(store, "r")
        lifecycle.resume_decided(store.value(ckpt.head_key("r")), 0)
        assert not processor.spawned and "r" in lifecycle.decided_early
        lifecycle._leave_or_keep(waiting, mine, WAITING)
        assert len(processor.spawned) == 1 and not lifecycle.decided_early
        processor.close_spawned()

    asyncio.run(main())


def test_a_restart_resumes_the_task_queued_behind_a_wait_and_holds_nothing_for_the_wait() -> None:
    async def main() -> None:
        lifecycle, desk, store, processor = _stack()
        for run in ("r", "lone"):
            task = _task(run, SESSION if run == "r" else "alone")
            lifecycle._leave_or_keep(task, await _wait(lifecycle, desk, store, task), WAITING)
        store.put(ckpt.head_key("t"), {"task": _task("t"), "epochs": [[0, 0]], "offset": 7})  # accepted behind r
        processor.close_spawned()
        restarted, desk, _, processor = _stack(store)
        await restarted.resume_in_flight([0])
        assert desk._waiting == {0: 2}
        assert [work.cr_frame.f_locals["head"]["task"]["task_id"] for work in processor.spawned] == ["t"]
        assert restarted.places.holds("r") and not restarted.places.holds("lone")
        assert not processor.spawned[0].cr_frame.f_locals["previous"].done()
        processor.close_spawned()

    asyncio.run(main())


def test_the_gauge_counts_each_waiting_run_once_and_stale_markers_go_at_the_assignment() -> None:
    async def main() -> None:
        _, desk, store, _ = _stack()
        task = _task("r")
        await desk.wait(task, _held(), 0)
        await desk.wait(task, _held(), 0)  # a replay that reaches the same held call asks again
        assert desk._waiting == {0: 1}
        assert desk.waiting_run(SESSION, 0) == "r" and desk.waiting_run("s", 0) is None
        assert await desk.close("r", 0, {"task_id": "r"}) and desk._waiting == {0: 0}
        assert session_key(SESSION, "r").encode() not in store.data and desk.waiting_run(SESSION, 0) is None

        await desk.wait(_task("x"), _held(), 0)
        _decide(store, "x")
        store.put(waiting_key("x"), ["billing:x:0:0"])  # a crash between the decision and the marker's tombstone
        assert await desk.take_over(0) == set() and desk._waiting == {0: 0}
        assert not [k for k in store.data if k.startswith((b"w/", b"ws/"))], "the stale marker and entry are dropped"

    asyncio.run(main())
