"""The approval desk's deadline timer, without Kafka: one event-loop timer per partition
however many calls wait, set in an empty context (a timer per held call kept its message's
context alive until the deadline: bench/waiting_memory.py), firing only for pending calls
past their deadline."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from collections import defaultdict
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

from agentstream.approvals.records import PENDING
from agentstream.events import now_ms
from agentstream.specialist.waiting import ApprovalDesk, approval_key
from tests.unit.checkpoint_store import MemoryPartition

DAY_MS = 86_400_000
_message: contextvars.ContextVar[object] = contextvars.ContextVar("message")


class _Processor:
    def __init__(self, owned: set[int]) -> None:
        self.owned = owned
        self.spawned: list[tuple[int, str]] = []

    def assigned_partitions(self) -> set[int]:
        return self.owned

    def spawn_resumed(self, work: Coroutine[Any, Any, None], topic: str, partition: int) -> None:
        self.spawned.append((partition, work.cr_frame.f_locals["ident"]))
        work.close()


def _desk(owned: set[int]) -> tuple[ApprovalDesk, dict[int, MemoryPartition], _Processor]:
    stores: dict[int, MemoryPartition] = defaultdict(MemoryPartition)
    processor = _Processor(owned)
    service = SimpleNamespace(topology=SimpleNamespace(topic=lambda name: name), processor=processor, input_topic="in")
    desk = ApprovalDesk(service, "billing", {}, lambda name: "", SimpleNamespace(partition=stores.__getitem__))  # type: ignore[arg-type]
    return desk, stores, processor


def _record(ident: str, deadline: int, status: str = PENDING) -> dict[str, Any]:
    return {"approval_id": ident, "deadline": deadline, "status": status}


def _store(stores: dict[int, MemoryPartition], partition: int, record: dict[str, Any]) -> None:
    stores[partition].put(approval_key(record["approval_id"]), record)


def test_one_timer_per_partition_for_any_number_of_waiting_calls_and_none_keeps_the_message() -> None:
    class Message:
        pass

    async def hold(desk: ApprovalDesk, i: int) -> weakref.ref[Message]:
        message = Message()
        _message.set(message)  # as a handler's context holds its record
        desk._arm(_record(f"a{i}", now_ms() + DAY_MS + i), i % 3)
        return weakref.ref(message)

    async def main() -> None:
        desk, _, _ = _desk({0, 1, 2})
        loop = asyncio.get_running_loop()
        before = len(loop._scheduled)  # type: ignore[attr-defined]  # CPython's timer heap: what is bounded here
        held = await asyncio.gather(*(hold(desk, i) for i in range(300)))
        assert len(loop._scheduled) - before == 3  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # the loop lets go of the last finished task's wake-up
        gc.collect()
        alive = [i for i, ref in enumerate(held) if ref() is not None]
        assert not alive, f"timers keep the messages of held calls {alive[:5]} alive"

    asyncio.run(main())


def test_the_timer_applies_deadlines_only_to_pending_calls_past_them_and_is_set_for_the_next() -> None:
    async def main() -> None:
        desk, stores, processor = _desk({0})
        now = now_ms()
        for record in (_record("late", now - 5), _record("decided", now - 5, "approve"), _record("later", now + DAY_MS)):
            _store(stores, 0, record)
        _store(stores, 1, _record("elsewhere", now - 5))  # a partition this worker does not own
        desk._deadlines_due(0)
        desk._deadlines_due(1)
        assert processor.spawned == [(0, "late")]
        due = desk._deadlines.due_at(0)
        assert due is not None and due >= now + DAY_MS and desk._deadlines.due_at(1) is None

    asyncio.run(main())


def test_a_deadline_moved_on_by_an_escalation_is_not_applied_early() -> None:
    async def main() -> None:
        desk, stores, _ = _desk({0})
        _store(stores, 0, _record("escalated", now_ms() + DAY_MS))
        await desk._deadline("escalated", 0)  # a timer armed before the escalation fires: nothing happens
        assert stores[0].value(approval_key("escalated"))["status"] == PENDING

    asyncio.run(main())
