"""The end of a run without Kafka: transcript, then result, then one write of the done
marker, the end of a retry tier's session place and the tombstones (head last); the
step records come from memory, not from a scan; and every prefix of that write a kill
can leave is a state the readers of these keys handle (specialist/lifecycle.py _forget)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

from agentstream.events import SPECIALIST_RESULT, now_ms
from agentstream.models.base import ModelResponse, ToolCall, Usage
from agentstream.runtime import MessageContext
from agentstream.runtime.errors import CheckpointError
from agentstream.specialist import checkpoint as ckpt
from agentstream.specialist.durable import DurableRun
from agentstream.specialist.lifecycle import TaskLifecycle
from agentstream.specialist.loop import AgentOutcome
from agentstream.tools.registry import ToolResult
from agentstream.transcripts.record import TRANSCRIPT, ordered_steps, steps_of
from tests.unit.checkpoint_store import MemoryPartition

RUN = "t1"
TASK = {"task_id": RUN, "session_id": "s", "tenant_id": "acme", "agent_type": "billing", "input": "Refund INV-1"}
REPLY = ModelResponse("", (ToolCall("c0", "lookup", {"invoice": "INV-1"}), ToolCall("c1", "lookup", {})), Usage(3, 2, 0.01), "m")


class _Store(MemoryPartition):
    """Counts the prefix scans of step records (what the end of a run no longer makes)."""

    def __init__(self) -> None:
        super().__init__()
        self.step_scans = 0

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        self.step_scans += prefix.startswith(ckpt.STEP.encode())
        return super().scan(prefix)


class _Table:
    def __init__(self, store: _Store) -> None:
        self.store = store

    def partition(self, partition: int) -> _Store:
        return self.store

    def __contains__(self, key: str) -> bool:
        return self.store.get(key.encode()) is not None

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.store.get(key.encode())
        return default if raw is None else json.loads(raw)

    def decode_value(self, raw: bytes) -> Any:
        return json.loads(raw)


class _Processor:
    """Writes land at once; every broker round trip is logged: (kind, keys or topic)."""

    name = "billing"

    def __init__(self, store: _Store) -> None:
        self.store = store
        self.trips: list[tuple[str, Any]] = []
        self.spawned: list[Coroutine[Any, Any, None]] = []
        self.sent: dict[str, dict[str, Any]] = {}  # schema -> the last record encoded with it
        self.sent_values: dict[str, list[tuple[bytes, object]]] = {}  # topic -> (value, headers) of each acknowledged send
        self.stored_at_send: dict[str, list[dict[str, Any]]] = {}  # topic -> the run's steps in the store then

    async def persist(self, table: object, key: str, value: Any, partition: int | None = None) -> None:
        self.trips.append(("persist", key))
        self.store.put(key, value)

    async def persist_all(self, table: object, items: list[tuple[str, Any]], partition: int) -> None:
        self.trips.append(("persist_all", list(items)))
        for key, value in items:
            self.store.put(key, value)

    async def send_acked(self, topic: str, value: bytes, key: str, headers: object = None) -> int:
        self.trips.append(("send_acked", topic))
        self.stored_at_send[topic] = _stored_steps(self.store)
        self.sent_values.setdefault(topic, []).append((value, headers))
        return 0

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.spawned.append(work)

    def spawn_resumed(self, work: Coroutine[Any, Any, None], topic: str, partition: int) -> None:
        self.spawned.append(work)

    def release(self) -> None:
        return None

    def draining(self, topic: str, partition: int) -> bool:
        return False


class _Agent:
    """Records a reply and one tool record of two read-only results (``more``), as the
    durable loop does; after a resume, whatever the chain lacks of the same."""

    agent_type = "billing"

    def model_id(self, task: dict[str, Any]) -> str:
        return "m"

    async def run(self, task: dict[str, Any], run: DurableRun) -> AgentOutcome:
        if 0 not in run.chain.models:
            await run.record(lambda seq: ckpt.model_step(0, REPLY, run.epoch, seq, timing=ckpt.Timing(1, 2)))
        if (0, 0) not in run.chain.tools:
            found = [ckpt.Finished(1, ToolResult("lookup", True, "none"))]
            await run.record(lambda seq: ckpt.tool_step(0, 0, ToolResult("lookup", True, "paid"), run.epoch, seq, more=found))
        return AgentOutcome("COMPLETED", "refunded", None, ["lookup"], {}, 1)

    def result(self, task: dict[str, Any], outcome: AgentOutcome, started: int) -> dict[str, Any]:
        return {"agent_type": "billing", "status": outcome.status, "started_at": started, "finished_at": started + 1,
                "behavior_version": "v1", "usage": {}, "output": outcome.output, "error": None}


def _worker(store: _Store) -> tuple[TaskLifecycle, _Processor]:
    processor = _Processor(store)

    def encode(schema: str, record: dict[str, Any]) -> bytes:
        processor.sent[schema] = record
        return json.dumps(record).encode()  # stands for Avro: decode_as gives the record back

    service = SimpleNamespace(
        topology=SimpleNamespace(topic=lambda name: name, topics={"transcripts": {}}), processor=processor,
        input_topic="in", agent="billing", progress=lambda *args: None, headers=lambda: None,
        schemas=SimpleNamespace(encode=encode, decode_as=lambda schema, raw: json.loads(raw)),
    )
    table = _Table(store)
    lifecycle = TaskLifecycle(service, _Agent(), table, {}, None, None)  # type: ignore[arg-type]
    return lifecycle, processor


def _stored_steps(store: _Store) -> list[dict[str, Any]]:
    """The run's step records as a decode of the store gives them (what the end read before)."""
    return [json.loads(value) for key, value in sorted(store.data.items()) if key.startswith(ckpt.step_prefix(RUN).encode())]


async def _run_task(store: _Store) -> _Processor:
    """A routed task run to its end on a worker over ``store``."""
    lifecycle, processor = _worker(store)
    await lifecycle.on_routed(dict(TASK), MessageContext("in", 0, 7, b"s", (), 0))
    await processor.spawned.pop()
    return processor


def _end_write(processor: _Processor) -> list[tuple[str, Any]]:
    kind, items = processor.trips[-1]
    assert kind == "persist_all", processor.trips
    return items  # type: ignore[no-any-return]


def test_a_finished_run_sends_transcript_then_result_then_ends_in_one_write_reading_no_step_back() -> None:
    store = _Store()
    processor = asyncio.run(_run_task(store))
    step_keys = [ckpt.step_key(RUN, 0, 0), ckpt.step_key(RUN, 0, 1)]
    assert [trip for trip in processor.trips[:3]] == [("persist", ckpt.head_key(RUN)), *(("persist", k) for k in step_keys)]
    assert processor.trips[3:5] == [("send_acked", "transcripts"), ("send_acked", "supervisor")]
    assert [key for key, _ in _end_write(processor)] == [ckpt.done_key(RUN), *step_keys, ckpt.head_key(RUN)]
    assert len(processor.trips) == 6 and store.step_scans == 0
    assert list(store.data) == [ckpt.done_key(RUN).encode()]


def test_the_transcript_from_memory_is_the_one_a_read_of_the_checkpoint_gives() -> None:
    processor = asyncio.run(_run_task(_Store()))
    record, stored = processor.sent[TRANSCRIPT], processor.stored_at_send["transcripts"]
    assert len(stored) == 2 and len(steps_of(record)) == 3, "a reply and two results of one tool record"
    assert json.loads(record["steps"]) == ordered_steps([[0, 0]], stored)


def test_a_run_back_from_the_tiers_drops_its_session_place_in_the_same_write_after_the_done_marker() -> None:
    store = _Store()
    store.put(ckpt.place_key(RUN), "s")  # parked in a retry tier before
    processor = asyncio.run(_run_task(store))
    ended = _end_write(processor)
    assert ended[:2] == [(ckpt.done_key(RUN), ended[0][1]), (ckpt.place_key(RUN), None)]
    assert ended[-1] == (ckpt.head_key(RUN), None)
    assert sum(kind == "persist" and key in (ckpt.done_key(RUN), ckpt.place_key(RUN)) for kind, key in processor.trips) == 0


def test_every_prefix_of_the_end_write_a_kill_leaves_is_handled_by_the_next_owner() -> None:
    """Before the write: head, steps and the place of a task back from a tier. A kill
    leaves any prefix of [done, place, steps..., head]: done first, so a redelivered copy
    is ignored as soon as anything went; the head last, so no step outlives it and the
    task is resumed (replaying its steps) exactly while the head is there; the place only
    after the done marker, so it never goes while the task may still come back."""
    finished = _Store()
    finished.put(ckpt.place_key(RUN), "s")
    lifecycle, processor = _worker(finished)
    ended: list[tuple[str, Any]] = []

    async def killed(table: object, items: list[tuple[str, Any]], partition: int) -> None:
        ended.extend(items)  # never lands here: the worker dies before the acknowledgement

    async def run_to_its_end_write() -> None:
        processor.persist_all = killed  # type: ignore[method-assign]
        await lifecycle.on_routed(dict(TASK), MessageContext("in", 0, 7, b"s", (), 0))
        await processor.spawned.pop()

    asyncio.run(run_to_its_end_write())
    assert [key for key, _ in ended[:2]] == [ckpt.done_key(RUN), ckpt.place_key(RUN)] and len(ended) == 5
    for landed in range(len(ended) + 1):
        store = _Store()
        store.data = dict(finished.data)
        for key, value in ended[:landed]:
            store.put(key, value)
        keys = {key.decode() for key in store.data}
        head = ckpt.head_key(RUN) in keys
        assert head == (landed < len(ended)), landed
        assert head or not any(key.startswith(ckpt.STEP) for key in keys), "no step outlives its head"
        assert ckpt.place_key(RUN) in keys or ckpt.done_key(RUN) in keys, "the place goes after the done marker"
        resumed, redelivered = asyncio.run(_restart(store))
        assert resumed == int(head), f"prefix {landed}: resumed {resumed}"
        assert redelivered == 0, f"prefix {landed}: a redelivered copy ran again"
        calls, results = asyncio.run(_take_over(store))
        assert calls == [], f"prefix {landed}: the next owner called again what was recorded: {calls}"
        assert results == int(landed == 0), f"prefix {landed}: {results} results sent again"
        assert set(store.data) == {ckpt.done_key(RUN).encode()}, f"prefix {landed}: {sorted(store.data)} left"


async def _take_over(store: _Store) -> tuple[list[str], int]:
    """A new owner of ``store``'s partition runs what it takes up to its end: the step
    records it wrote (calls made again) and the results it sent."""
    lifecycle, processor = _worker(store)
    await lifecycle.resume_in_flight([0])
    while processor.spawned:
        await processor.spawned.pop()
    calls = [key for kind, key in processor.trips if kind == "persist" and key.startswith(ckpt.STEP)]
    return calls, sum(1 for kind, topic in processor.trips if kind == "send_acked" and topic == "supervisor")


async def _restart(store: _Store) -> tuple[int, int]:
    """A new owner of ``store``'s partition: the runs it resumes, then the runs a
    redelivered copy of the task starts."""
    lifecycle, processor = _worker(store)
    await lifecycle.resume_in_flight([0])
    resumed = len(processor.spawned)
    for work in processor.spawned:
        work.close()
    processor.spawned.clear()
    await lifecycle.on_routed(dict(TASK), MessageContext("in", 0, 7, b"s", (), 0))
    return resumed, len(processor.spawned)


def test_a_resumed_run_ends_with_every_step_of_its_checkpoint_read_once_at_the_resume() -> None:
    store = _Store()
    store.put(ckpt.head_key(RUN), {"task": dict(TASK), "epochs": [[0, 0]], "offset": 7, "attempt": 0, "replay": None})
    store.put(ckpt.step_key(RUN, 0, 0), ckpt.model_step(0, REPLY, 0, 0))
    zombie = ckpt.step_key(RUN, 3, 9)  # outside every epoch's range: not in the chain, tombstoned all the same
    store.put(zombie, ckpt.model_step(5, REPLY, 3, 9))

    async def main() -> _Processor:
        lifecycle, processor = _worker(store)
        await lifecycle.resume_in_flight([0])
        await processor.spawned.pop()
        return processor

    processor = asyncio.run(main())
    assert store.step_scans == 1, "one read of the steps, to rebuild the chain"
    new = ckpt.step_key(RUN, 1, 1)  # the tool record, written by the new owner (epoch 1 from seq 1)
    ended = [key for key, _ in _end_write(processor)]
    assert ended == [ckpt.done_key(RUN), ckpt.step_key(RUN, 0, 0), zombie, new, ckpt.head_key(RUN)]
    record = processor.sent[TRANSCRIPT]
    assert [(s["epoch"], s["seq"], s["kind"]) for s in steps_of(record)] == [(0, 0, "model"), (1, 1, "tool"), (1, 1, "tool")]
    assert record["owners"] == 2 and processor.sent[SPECIALIST_RESULT]["status"] == "COMPLETED"


def _refuse_the_next_write_once(lifecycle: TaskLifecycle, processor: _Processor) -> None:
    """The broker refuses the next acknowledged write; the background retry does not wait."""
    processor.assigned_partitions = lambda: {0}  # type: ignore[attr-defined]
    landed = processor.persist_all
    refusals = [CheckpointError("write to checkpoints[0] was not acknowledged: timed out")]

    async def refused_once(table: object, items: list[tuple[str, Any]], partition: int) -> None:
        if refusals:
            raise refusals.pop()
        await landed(table, items, partition)

    async def no_wait(seconds: float) -> None:
        return None

    processor.persist_all = refused_once  # type: ignore[method-assign]
    lifecycle.ended_later._sleep = no_wait


def test_an_end_write_the_broker_refuses_after_the_result_is_retried_and_the_task_never_runs_again() -> None:
    """Once the result is out, a failed end write is no failure of the task: the task goes
    to no retry tier (its copy would find no done marker and call everything again); the
    head stays, and the write is retried beside the partition until it lands."""
    store = _Store()
    lifecycle, processor = _worker(store)
    tiers: list[str] = []
    lifecycle.retries = SimpleNamespace(failed=lambda *args: tiers.append("failed"))  # type: ignore[assignment]
    _refuse_the_next_write_once(lifecycle, processor)

    async def main() -> list[str]:
        await lifecycle.on_routed(dict(TASK), MessageContext("in", 0, 7, b"s", (), 0))
        await processor.spawned.pop()  # the run: its end write refused
        left = sorted(key.decode() for key in store.data)
        await processor.spawned.pop()  # the retry beside the partition
        return left

    left_after_refusal = asyncio.run(main())
    assert tiers == [], "the task went to a retry tier after its result was out"
    assert ckpt.head_key(RUN) in left_after_refusal and ckpt.done_key(RUN) not in left_after_refusal
    assert [topic for kind, topic in processor.trips if kind == "send_acked"] == ["transcripts", "supervisor"]
    assert set(store.data) == {ckpt.done_key(RUN).encode()}


def test_an_end_write_finished_by_the_next_owner_is_retried_when_the_broker_refuses_it() -> None:
    """The next owner of a run whose end write a kill cut short finishes that write; a
    refusal there is retried beside the partition too, not left for the next assignment."""
    store = _Store()
    store.put(ckpt.head_key(RUN), {"task": dict(TASK), "epochs": [[0, 0]], "offset": 7, "attempt": 0, "replay": None})
    store.put(ckpt.step_key(RUN, 0, 0), ckpt.model_step(0, REPLY, 0, 0))
    store.put(ckpt.done_key(RUN), now_ms())
    lifecycle, processor = _worker(store)
    _refuse_the_next_write_once(lifecycle, processor)

    async def main() -> list[str]:
        await lifecycle.resume_in_flight([0])
        await processor.spawned.pop()  # the end write again: refused
        left = sorted(key.decode() for key in store.data)
        assert len(processor.spawned) == 1, "the refused end write was not retried"
        await processor.spawned.pop()  # the retry beside the partition
        return left

    left_after_refusal = asyncio.run(main())
    assert ckpt.head_key(RUN) in left_after_refusal
    assert [kind for kind, _ in processor.trips] == ["persist_all"], "nothing but the end write: no call, no result"
    assert set(store.data) == {ckpt.done_key(RUN).encode()}
