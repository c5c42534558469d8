"""The supervisor's escalator without Kafka. A cancel that comes during a task's review is
recorded and makes the review's escalation a CANCELED result (no request sent); one that
comes after the hold closes the approval; one of a task with its result is ignored. And
when the broker refuses a write: a deadline that fails to apply is retried with back-off
while the partition's other deadlines are applied, and a decided escalation whose result
fails to publish is published again in the background instead of waiting for the next
assignment (supervisor/retried.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

from agentstream.approvals.policy import DeadlinePolicy
from agentstream.approvals.records import PENDING, approval_decision, approval_requested
from agentstream.cancellation.records import cancel_record
from agentstream.supervisor.cancels import cancel_key
from agentstream.supervisor.escalation import (
    approval_key, escalated_marker, escalation_id, held, is_escalated, outcome, request_task,
)
from agentstream.supervisor.escalator import Escalator
from agentstream.supervisor.review import Review, reviewed
from agentstream.supervisor.app import final_result
from tests.unit.checkpoint_store import MemoryPartition
from tests.unit.test_supervisor_review import _result

LONG_AGO = 1_600_000_000_000  # the records' deadlines (60 s after it) are long past


class BrokerDown(Exception):
    """What the fake broker raises for a write it refuses."""


class _Store(MemoryPartition):
    def get_value(self, key: bytes, decode: Any) -> Any:
        raw = self.data.get(key)
        return None if raw is None else decode(raw)


class _App:
    """The processor: persists into the store unless the key's write is to fail (as many
    times as ``refuse`` says), sends, and runs spawned work as tasks."""

    def __init__(self, store: _Store) -> None:
        self.store = store
        self.refuse: dict[str, int] = {}
        self.spawned: list[asyncio.Task[None]] = []
        self.requests: list[bytes] = []

    async def persist(self, table: Any, key: str, value: Any, *, partition: int) -> None:
        if self.refuse.get(key, 0) > 0:
            self.refuse[key] -= 1
            raise BrokerDown(f"write of {key} refused")
        self.store.put(key, value)

    async def persist_all(self, table: Any, items: list[tuple[str, Any]], *, partition: int) -> None:
        for key, value in items:  # a refused write leaves the prefix before it, as the processor's does
            await self.persist(table, key, value, partition=partition)

    async def send_acked(self, topic: str, value: bytes, key: str) -> int:
        self.requests.append(value)
        return 0

    def assigned_partitions(self) -> set[int]:
        return {0}

    def spawn_resumed(self, work: Coroutine[Any, Any, None], topic: str, partition: int) -> None:
        self.spawned.append(asyncio.get_running_loop().create_task(work))

    def release(self) -> None:
        pass


class _Emitter:
    """Publishes into ``published``; fails the first ``failures`` publishes."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.published: list[dict[str, Any]] = []
        self.emitting: set[str] = set()

    async def publish(self, final: dict[str, Any], partition: int, replay: str | None) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise BrokerDown(f"result of {final['task_id']} refused")
        self.published.append(final)

    def unfinished(self, task_id: str) -> None:
        return None


def _escalator(emitter: _Emitter) -> tuple[Escalator, _App, list[float]]:
    store = _Store()
    app = _App(store)
    service = SimpleNamespace(processor=app, agent="supervisor", topology=SimpleNamespace(topic=lambda name: name),
                              schemas=SimpleNamespace(encode=lambda schema, record: json.dumps(record).encode()),
                              input_topic="in", progress=lambda *args: None)
    markers = SimpleNamespace(partition=lambda partition: store, decode_value=json.loads)
    escalator = Escalator(service, markers, {}, emitter, DeadlinePolicy(deadline_s=60))  # type: ignore[arg-type]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the back-off, recorded instead of waited
        waits.append(seconds)

    escalator.retried._sleep = sleep
    return escalator, app, waits


def _reviewed(task_id: str) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """A task's specialist results, their combine, and the review's escalation of it."""
    results = [{**_result("billing", "Refunded."), "task_id": task_id, "session_id": f"s-{task_id}"}]
    combined = final_result(results, results)
    return results, combined, reviewed(combined, Review("escalate", "We refund twice.", "Needs a manager.", None, 0.7),
                                       "openai:m")


async def _review(decided: dict[str, Any]) -> dict[str, Any]:
    return decided


def _cancel(task_id: str) -> dict[str, Any]:
    return cancel_record(task_id, f"s-{task_id}", "acme", "carol", "withdrawn", LONG_AGO)


CTX = SimpleNamespace(partition=0, where="in[0]", offset=7)


def _waiting(escalator: Escalator, task_id: str) -> dict[str, Any]:
    """Hold an escalation of ``task_id`` (written straight into the store)."""
    _, _, decided = _reviewed(task_id)
    record = held("supervisor", decided, None, "Refund twice", DeadlinePolicy(deadline_s=60), LONG_AGO)
    store = escalator.markers.partition(0)
    store.put(approval_key(record["approval_id"]), record)
    store.put(task_id, escalated_marker(record, None))
    return record


def test_a_cancel_during_the_review_makes_its_escalation_a_canceled_result_and_sends_no_request() -> None:
    async def main() -> None:
        escalator, app, _ = _escalator(_Emitter())
        results, combined, decided = _reviewed("t-1")
        await escalator.on_cancel(_cancel("t-1"), CTX)  # type: ignore[arg-type]  # the review still runs
        assert app.store.value(cancel_key("t-1"))["cancel"]["requested_by"] == "carol"
        assert escalator.canceled(combined, 0)["status"] == "CANCELED"  # read before a review, too
        got = await escalator.after_review(_review(decided), combined, results, 0, None)
        assert got is not None and (got["status"], got["output"]) == ("CANCELED", None)
        assert got["error"] == {"code": "CANCELED", "message": "canceled by carol: withdrawn"}
        assert app.requests == [] and approval_key(escalation_id("supervisor", "t-1")).encode() not in app.store.data

    asyncio.run(main())


def test_a_cancel_after_the_hold_closes_the_approval_and_one_of_a_published_task_is_ignored() -> None:
    async def main() -> None:
        emitter = _Emitter()
        escalator, app, _ = _escalator(emitter)
        results, combined, decided = _reviewed("t-2")
        assert await escalator.after_review(_review(decided), combined, results, 0, None) is None  # held
        assert len(app.requests) == 1 and is_escalated(app.store.value("t-2"))
        await escalator.on_cancel(_cancel("t-2"), CTX)  # type: ignore[arg-type]
        closed = app.store.value(approval_key(escalation_id("supervisor", "t-2")))
        assert closed["status"] == "canceled" and emitter.published == [outcome(closed)]
        assert emitter.published[0]["status"] == "CANCELED" and cancel_key("t-2").encode() not in app.store.data
        app.store.put("t-3", {"state": "sent", "offset": 4, "at": LONG_AGO})
        await escalator.on_cancel(_cancel("t-3"), CTX)  # type: ignore[arg-type]
        assert cancel_key("t-3").encode() not in app.store.data  # it has its result: nothing recorded

    asyncio.run(main())


def test_a_deadline_that_fails_to_apply_is_retried_with_back_off_and_the_others_are_applied() -> None:
    async def main() -> None:
        emitter = _Emitter()
        escalator, app, waits = _escalator(emitter)
        records = [_waiting(escalator, f"t-{i}") for i in range(3)]
        app.refuse[approval_key(records[0]["approval_id"])] = 2  # the first one's denial: refused twice
        await escalator._deadlines(0)
        # The two others are denied now, in spite of the first one's failure.
        assert [r["task_id"] for r in emitter.published] == ["t-1", "t-2"]
        assert all(r["error"]["message"].startswith("denied by deadline") for r in emitter.published)
        assert app.store.value(approval_key(records[0]["approval_id"]))["status"] == PENDING
        await asyncio.gather(*app.spawned)
        assert [r["task_id"] for r in emitter.published] == ["t-1", "t-2", "t-0"]  # retried until applied
        assert app.store.value(approval_key(records[0]["approval_id"]))["status"] == "deny"
        assert waits[0] == 1.0 and 2.0 <= waits[1] <= 3.0, waits  # backed off: 1 s, then 2 s + jitter

    asyncio.run(main())


def test_a_decided_escalation_whose_publish_fails_is_published_in_the_background_once() -> None:
    async def main() -> None:
        emitter = _Emitter(failures=2)
        escalator, app, waits = _escalator(emitter)
        record = _waiting(escalator, "t-9")
        request = approval_requested(record, request_task(record), "supervisor")
        decision = approval_decision(request, "approve", "ops", "checked", LONG_AGO + 5)
        await escalator.on_decision(decision, CTX)  # type: ignore[arg-type]
        assert emitter.published == []  # refused; the handler went on, the decision is recorded
        decided = app.store.value(approval_key(record["approval_id"]))
        assert decided["status"] == "approve"
        await asyncio.gather(*app.spawned)
        assert emitter.published == [outcome(decided)] and emitter.published[0]["status"] == "COMPLETED"
        assert len(waits) == 2, waits  # the first retry after 1 s, then one more after its failure

    asyncio.run(main())
