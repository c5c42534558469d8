"""Settling "emitting" markers (supervisor/emitter.py) without Kafka: a task whose result
the results topic has gets its STATE event again (a crash may have come before it left)
and its "sent" marker, no second result; one whose result is missing gets it sent, then
its STATE event, then its "sent" marker with the result's offset; the markers of the
tasks found published are written in one round trip. A result is found published by its
task id and ``completed_at``: a replayed task's earlier FAILED result does not count."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from agentstream.events import TASK_RESULT
from agentstream.serde import SchemaSet
from agentstream.supervisor.app import final_result
from agentstream.supervisor.emitter import EMITTING, SENT, ResultEmitter
from tests.unit.test_supervisor_review import _result

SCHEMAS = SchemaSet.load()
RESULTS_OFFSET = 41  # where the fake results topic puts a result sent to it


class _App:
    """The processor: the results topic holds ``published``; every write and send is logged in order."""

    def __init__(self, published: list[dict[str, Any]]) -> None:
        self.published = [SCHEMAS.encode(TASK_RESULT, r) for r in published]
        self.log: list[tuple[str, Any]] = []

    async def read_to_end(self, topic: str, partition: int, from_offset: int) -> list[tuple[None, bytes, int]]:
        return [(None, value, offset) for offset, value in enumerate(self.published) if offset >= from_offset]

    async def persist_all(self, table: Any, items: list[tuple[str, Any]], *, partition: int) -> None:
        self.log.append(("markers", [(key, value["state"], value.get("offset")) for key, value in items]))

    async def persist(self, table: Any, key: str, value: Any, *, partition: int) -> None:
        await self.persist_all(table, [(key, value)], partition=partition)

    async def send_acked(self, topic: str, value: bytes, key: str, *, partition: int) -> int:
        self.log.append(("result", SCHEMAS.decode_as(TASK_RESULT, value)["task_id"]))
        return RESULTS_OFFSET


def _emitter(app: _App) -> ResultEmitter:
    service = SimpleNamespace(
        processor=app, agent="supervisor", schemas=SCHEMAS, topology=SimpleNamespace(topic=lambda name: name),
        progress=lambda task, kind, state, detail="": app.log.append(("event", (task["task_id"], kind, state))))
    markers = SimpleNamespace(name="dedupe", stores={0: object()}, partition=lambda p: markers.stores[p])
    return ResultEmitter(service, markers, {})  # type: ignore[arg-type]


def _final(task_id: str) -> dict[str, Any]:
    results = [{**_result("billing", "Refunded."), "task_id": task_id, "route": ["billing"]}]
    return final_result(results, results)


def _marker(final: dict[str, Any]) -> dict[str, Any]:
    return {"state": EMITTING, "result": final, "results_from": 0, "replay": None}


def test_settling_sends_only_the_missing_results_and_marks_the_published_ones_in_one_write() -> None:
    out, missing, also_out = _final("t-out"), _final("t-missing"), _final("t-also-out")
    app = _App(published=[out, also_out])
    unsure = [_marker(out), _marker(missing), _marker(also_out)]
    asyncio.run(_emitter(app)._settle(unsure, 0))
    assert app.log == [
        # The published ones' terminal events, which a crash after the result's ack may have lost.
        ("event", ("t-out", "STATE", "COMPLETED")),
        ("event", ("t-also-out", "STATE", "COMPLETED")),
        ("markers", [("t-out", SENT, -1), ("t-also-out", SENT, -1)]),  # one round trip for both
        ("result", "t-missing"),  # the one result not on the topic, sent once
        ("event", ("t-missing", "STATE", "COMPLETED")),  # at once: streams wait for it only a grace period
        ("markers", [("t-missing", SENT, RESULTS_OFFSET)]),  # after its result is acknowledged
    ]


def test_a_marker_whose_result_is_on_the_topic_is_settled_without_sending_the_result_again() -> None:
    out = _final("t-out")
    app = _App(published=[out])
    asyncio.run(_emitter(app).settle(_marker(out), 0))
    assert app.log == [("event", ("t-out", "STATE", "COMPLETED")), ("markers", [("t-out", SENT, -1)])]


def test_a_replayed_task_whose_earlier_failed_result_is_on_the_topic_gets_its_own_result_sent() -> None:
    # The dead-lettering's FAILED result of the task, then the replay's marker (noting an
    # offset before it): that result is another one, so the replay's is sent, not skipped,
    # and no event claims the replay's COMPLETED before it is out.
    replayed = _final("t-replayed")
    dead_lettered = {**replayed, "status": "FAILED", "completed_at": replayed["completed_at"] - 60_000}
    app = _App(published=[dead_lettered])
    asyncio.run(_emitter(app).settle({**_marker(replayed), "replay": "r-1"}, 0))
    assert app.log == [
        ("result", "t-replayed"),
        ("event", ("t-replayed", "STATE", "COMPLETED")),
        ("markers", [("t-replayed", SENT, RESULTS_OFFSET)]),
    ]


class _EmittingApp(_App):
    def release(self) -> None:
        self.log.append(("released", None))


def _emitted_line(final: dict[str, Any], replay: str | None, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    app = _EmittingApp(published=[])
    ctx = SimpleNamespace(partition=0, where="supervisor.v1[0]@7")
    with caplog.at_level(logging.DEBUG, logger="agentstream.supervisor.emitter"):
        asyncio.run(_emitter(app)._emit(final["task_id"], final, ctx, replay, ready_at=0))  # type: ignore[arg-type]
    assert ("result", final["task_id"]) in app.log
    lines = [r for r in caplog.records if f"task {final['task_id']} " in r.getMessage() and " via " in r.getMessage()]
    assert len(lines) == 1, caplog.text
    return lines[0]


def test_a_routine_result_is_logged_at_debug_and_the_rest_at_info(caplog: pytest.LogCaptureFixture) -> None:
    routine = _final("t-routine")
    partial = {**_final("t-partial"), "error": {"code": "PARTIAL_FAILURE", "message": "account failed"}}
    failed = {**_final("t-failed"), "status": "FAILED"}
    assert _emitted_line(routine, None, caplog).levelno == logging.DEBUG
    assert _emitted_line(partial, None, caplog).levelno == logging.INFO  # COMPLETED in part: worth a line
    assert _emitted_line(failed, None, caplog).levelno == logging.INFO
    assert _emitted_line(_final("t-replayed"), "r-1", caplog).levelno == logging.INFO  # a dead letter replayed
